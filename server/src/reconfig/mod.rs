//! Dynamic reconfiguration through the ZooKeeper API: a client's `reconfig` (opcode 16) becomes
//! Raft membership changes (openraft's joint consensus), and `/zookeeper/config` shows the
//! membership in ZooKeeper's format ([`spec`]), rewritten by the leader after every change
//! ([`sync`]).
//!
//! The node that holds the client's connection checks what it can alone — that reconfig is
//! enabled, that the caller may write `/zookeeper/config` (only `super` may: its ACL is
//! world-readable only), that the specs parse — and hands the request to the leader, itself or
//! over the peer port ([`crate::peer::PeerRequest::Reconfig`]). The leader, one reconfig at a
//! time, checks `fromConfig` and that a majority of the new voters (and of the current ones) is
//! reachable and caught up, then changes the membership step by step — new members join as
//! learners and catch up, then the voter set is replaced in one joint change, then members
//! that leave are removed — and finally writes the new `/zookeeper/config` with a
//! [`Command::Config`] entry whose origin is the client's request: its reply (the new
//! configuration and the node's stat) leaves after that entry is applied where the client is
//! connected, behind the watch event it fires.
//!
//! Unlike ZooKeeper, whose reconfig is one atomic proposal, a change that fails half-way (a new
//! member that does not catch up in time, a leader lost) leaves the steps already taken; the
//! leader's [`sync`] then shows the membership as it is. A leader lost inside the joint change
//! leaves it to the next leader, which ends it ([`sync`]): the new voters, with the members
//! that were to leave still there as learners (observers), since the removal step never ran.
//! A reconfig forwarded by a follower runs on the leader on a task of its own, so it goes on
//! if the peer connection that asked closes; a change of the voters whose caller stops waiting
//! (a step's timeout) still makes both its entries while this node leads: it runs on a task of
//! its own that holds the node's right to change the membership ([`ChangeRight`],
//! [`Node::change_membership`]); the reconfig's later steps then do not run. The client of a
//! reconfig carried out is answered when its `Config` entry is applied on its own node, which
//! waits for that at most [`ANSWER_TIMEOUT`], then closes the connection (an unknown outcome):
//! a node the reconfig removed never gets the entry, and one more than that far behind gets it
//! too late.

pub mod spec;
pub mod sync;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, ForwardToLeader, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use synod_proto::mode::perms;
use synod_proto::records::ReconfigRequest;
use synod_proto::{Id, Response};
use synod_raft_store::state_machine::lock;
use synod_raft_store::tree::CONFIG_NODE;
use synod_raft_store::types::CONFIG_NODE_SINCE;
use synod_raft_store::{Command, NodeId, Origin, TypeConfig};
use tokio::sync::oneshot;

use crate::error::ReconfigError;
use crate::node::{Node, Proposal};
use crate::peer::{PeerRequest, PeerResponse};
use crate::pipeline::pending::Completion;
use crate::pipeline::write_order::WriteOrder;
use spec::{Member, Members, Role};

/// How long a probe of a (new) member may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one membership step (a learner catching up, a joint change committing) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a follower waits for the leader to carry out a forwarded reconfig.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// How long the node holding a client's reconfig waits, once the leader has carried it out,
/// for the entry that answers the client to be applied here. A node the reconfig removed never
/// gets it (the leader no longer replicates to it): the client's connection then closes (an
/// unknown outcome, as for any write) rather than wait for ever, its later requests behind it.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A client's `reconfig`, checked by the node it is connected to, for the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconfigOrder {
    /// Incremental: `server.N=...` specs to add (or whose role to change), comma-separated.
    pub joining: String,
    /// Incremental: ids to remove, comma-separated.
    pub leaving: String,
    /// Non-incremental: the whole new configuration (then both lists above are empty).
    pub new_members: String,
    /// The configuration version the change applies to (-1: any).
    pub from_config: i64,
    /// The client's request: the [`Command::Config`] entry that ends the reconfig completes it.
    pub origin: Origin,
    /// The caller's session and identities, for the audit trail.
    pub session_id: i64,
    pub auth: Vec<(String, String)>,
}

impl ReconfigOrder {
    /// How the audit trail shows the request.
    fn describe(&self) -> String {
        format!(
            "reconfig joining=[{}] leaving=[{}] members=[{}] fromConfig={:x}",
            self.joining, self.leaving, self.new_members, self.from_config
        )
    }
}

/// Reconfig state of a node: one change at a time (a reconfig, an admin request or the
/// leader's [`sync`]), and the client addresses members advertised, for `/zookeeper/config`.
#[derive(Default)]
pub struct Reconfigs {
    /// Held by the leader while it changes the membership or rewrites `/zookeeper/config`
    /// ([`ChangeRight`]). Behind an `Arc` so that a change's own task can hold it
    /// ([`Node::change_membership`]).
    change_right: Arc<tokio::sync::Mutex<()>>,
    /// Each member's advertised client address, by id, with the peer address it was asked at
    /// (a member that moves is asked again). Bounded by the number of members ever described.
    client_addrs: std::sync::Mutex<HashMap<NodeId, (String, String)>>,
}

/// The right to change the membership ([`Reconfigs::change_right`]), shared by whoever asked
/// for a change and the task that carries it out ([`Node::change_membership`]): it is given
/// back when both are done, so a change whose caller stopped waiting keeps it until it ends.
pub type ChangeRight = Arc<tokio::sync::OwnedMutexGuard<()>>;

/// What a membership change comes to: openraft's reply once the change is committed, or why it
/// was refused or failed.
pub type ChangeOutcome = Result<
    openraft::raft::ClientWriteResponse<TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
>;

impl Node {
    /// The right to change the membership, if nobody holds it now.
    pub fn try_claim_membership(&self) -> Option<ChangeRight> {
        let lock = self.reconfigs.change_right.clone();
        lock.try_lock_owned().ok().map(Arc::new)
    }

    /// The right to change the membership, waiting until `deadline` for whoever holds it (a
    /// reconfig adding a learner holds it while the learner catches up).
    pub async fn claim_membership(&self, deadline: tokio::time::Instant) -> Option<ChangeRight> {
        let lock = self.reconfigs.change_right.clone().lock_owned();
        let held = tokio::time::timeout_at(deadline, lock).await.ok()?;
        Some(Arc::new(held))
    }

    /// Makes the membership change `change` on a task of its own, which holds `right` until the
    /// change has ended, and returns its outcome. openraft changes the voters in two entries (the
    /// joint configuration, then the new one alone), and it is its caller that proposes the
    /// second once the first commits: a caller that stopped waiting in between (a timeout, an
    /// HTTP client that went away, a peer connection lost) would leave the joint configuration
    /// to [`sync`], which ends it keeping the leavers as learners. Run here, the change goes to
    /// its end whoever stops waiting for it; dropping the returned future only stops waiting.
    ///
    /// If this node stops leading (a new term, or another leader), the task gives its share of
    /// the right back (a caller that still waits holds its own, at most its timeout) and waits
    /// at most [`STEP_TIMEOUT`] more, then answers as a follower would (`ForwardToLeader`). A
    /// leader deposed before its entry committed usually learns its fate when the entry is
    /// applied (and proposes the second step if it leads again), but may never (a snapshot that
    /// covers the entry answers no one): the right must not stay with such a change, nor the
    /// task for ever. A joint configuration left so is ended by the leader ([`sync`]).
    pub fn change_membership(
        self: &Arc<Self>,
        change: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
        right: ChangeRight,
    ) -> impl std::future::Future<Output = ChangeOutcome> + Send + 'static {
        let node = self.clone();
        let task = tokio::spawn(async move {
            let mut metrics = node.raft.metrics();
            let term = metrics.borrow().current_term;
            let deposed = async {
                let me = Some(node.id);
                let moved = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
                    m.current_term != term || m.current_leader != me
                };
                // An error: the metrics' sender is gone, openraft stopped.
                metrics.wait_for(moved).await.is_ok()
            };
            let changed = node.raft.change_membership(change, retain);
            tokio::pin!(changed);
            tokio::select! {
                outcome = &mut changed => outcome,
                still_running = deposed => {
                    drop(right);
                    if !still_running {
                        return Err(RaftError::Fatal(Fatal::Stopped));
                    }
                    tokio::time::timeout(STEP_TIMEOUT, changed)
                        .await
                        .unwrap_or(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(
                            ForwardToLeader::empty(),
                        ))))
                }
            }
        });
        async move {
            match task.await {
                Ok(outcome) => outcome,
                Err(e) if e.is_panic() => Err(RaftError::Fatal(Fatal::Panicked)),
                Err(_) => Err(RaftError::Fatal(Fatal::Stopped)),
            }
        }
    }

    /// Starts a client's `reconfig`; the returned receiver gets its outcome (the new
    /// configuration, or a ZooKeeper error code). Called in request order by the connection,
    /// whose `write_order` admits it only alone: it goes to the leader apart from the connection's
    /// other writes ([`crate::pipeline::write_order`]).
    pub fn start_reconfig(
        self: &Arc<Self>,
        session_id: i64,
        auth: &[Id],
        req: ReconfigRequest,
        write_order: &Arc<WriteOrder>,
    ) -> oneshot::Receiver<Completion> {
        let origin = self.origin();
        let (tx, rx) = oneshot::channel();
        lock(&self.replica).observer.pending.add(origin.request, tx);
        let in_flight = match write_order.admit_alone() {
            Ok(in_flight) => in_flight,
            Err(e) => {
                self.refuse_out_of_order(Some(origin), e);
                return rx;
            }
        };
        let order = ReconfigOrder {
            joining: req.joining_servers.unwrap_or_default(),
            leaving: req.leaving_servers.unwrap_or_default(),
            new_members: req.new_members.unwrap_or_default(),
            from_config: req.cur_config_id,
            origin,
            session_id,
            auth: auth
                .iter()
                .map(|i| (i.scheme.clone(), i.id.clone()))
                .collect(),
        };
        let checked = self.check_reconfig(auth, &order);
        let node = self.clone();
        tokio::spawn(async move {
            let outcome = match checked {
                Ok(()) => node.route_reconfig(order).await,
                Err(e) => Err(e),
            };
            // Known: applied, or refused with a code the client is told.
            in_flight.settle(
                outcome
                    .as_ref()
                    .map_or_else(|e| e.code().is_some(), |()| true),
            );
            match outcome {
                // Answered already where this node led (its entry applied here first).
                Ok(())
                    if !lock(&node.replica)
                        .observer
                        .pending
                        .is_waiting(origin.request) => {}
                Ok(()) => {
                    tokio::time::sleep(ANSWER_TIMEOUT).await;
                    // A no-op once the entry was applied here and answered the client.
                    lock(&node.replica).observer.pending.fail(
                        origin.request,
                        format!(
                            "the reconfig was carried out, but its entry was not applied on this \
                             node within {ANSWER_TIMEOUT:?} (a node it removed never gets it)"
                        ),
                    );
                }
                Err(e) => {
                    tracing::info!(session = session_id, error = %e, "reconfig refused");
                    let mut r = lock(&node.replica);
                    let zxid = r.applied_zxid();
                    match e.code() {
                        Some(err) => r.observer.pending.answer(
                            origin.request,
                            Completion::Write {
                                zxid,
                                err,
                                response: Response::Empty,
                            },
                        ),
                        None => r.observer.pending.fail(origin.request, e.to_string()),
                    }
                }
            }
        });
        rx
    }

    /// What the node holding the connection checks alone, in ZooKeeper's order: enabled, the
    /// caller may write `/zookeeper/config`, the arguments parse.
    fn check_reconfig(&self, auth: &[Id], order: &ReconfigOrder) -> Result<(), ReconfigError> {
        self.reconfig_enabled()?;
        self.may_reconfig(auth)?;
        parse(order).map(|_| ())
    }

    /// Whether `auth` may write `/zookeeper/config` (only `super` may: its ACL is read-only
    /// for the world); checked where the client is connected and again on the leader.
    fn may_reconfig(&self, auth: &[Id]) -> Result<(), ReconfigError> {
        let may = {
            let r = lock(&self.replica);
            r.tree
                .node(CONFIG_NODE)
                .is_some_and(|n| synod_raft_store::acl::check(&n.acl, perms::WRITE, auth))
        };
        if may {
            Ok(())
        } else {
            Err(ReconfigError::NoAuth)
        }
    }

    fn reconfig_enabled(&self) -> Result<(), ReconfigError> {
        if !self.cfg.reconfig_enabled {
            return Err(ReconfigError::Disabled(
                "this node runs without --reconfig-enabled".into(),
            ));
        }
        let version = crate::upgrade::cluster_version(self);
        if version < CONFIG_NODE_SINCE {
            return Err(ReconfigError::Disabled(format!(
                "the cluster version is {version}; reconfig needs {CONFIG_NODE_SINCE} (every \
                 member on release 0.2 or later)"
            )));
        }
        Ok(())
    }

    /// Carries the order out here if this node leads, else has the leader do it.
    async fn route_reconfig(self: &Arc<Self>, order: ReconfigOrder) -> Result<(), ReconfigError> {
        let Some((leader, addr)) = self.leader() else {
            return Err(ReconfigError::Failed("no leader is known".into()));
        };
        if leader == self.id {
            return self.execute_reconfig(order).await;
        }
        match self
            .pool
            .call(leader, &addr, PeerRequest::Reconfig(order), FORWARD_TIMEOUT)
            .await
        {
            Ok(PeerResponse::Reconfig(r)) => r,
            Ok(other) => Err(ReconfigError::Failed(format!(
                "unexpected reply {}",
                other.variant_name()
            ))),
            Err(e) => Err(ReconfigError::Failed(format!("leader {leader}: {e}"))),
        }
    }

    /// The leader's part: see the module documentation. `Ok` once the [`Command::Config`]
    /// entry that completes the client's request is applied here.
    pub async fn execute_reconfig(
        self: &Arc<Self>,
        order: ReconfigOrder,
    ) -> Result<(), ReconfigError> {
        self.reconfig_enabled()?;
        let auth: Vec<Id> = order
            .auth
            .iter()
            .map(|(scheme, id)| Id {
                scheme: scheme.clone(),
                id: id.clone(),
            })
            .collect();
        self.may_reconfig(&auth)?;
        if !self.is_leader() {
            return Err(ReconfigError::Failed("this node no longer leads".into()));
        }
        let right = self
            .try_claim_membership()
            .ok_or(ReconfigError::InProgress)?;
        let (current, version) = self.config_in_effect()?;
        if order.from_config != -1 && order.from_config != version {
            return Err(ReconfigError::BadVersion {
                given: order.from_config,
                current: version,
            });
        }
        let target = target_of(&current, parse(&order)?)?;
        let old = voters(&current);
        let new = voters(&target);
        self.check_new_quorum(&current, &target, &old, &new).await?;

        // 1. New members join as learners and catch up.
        for (id, m) in target.iter().filter(|(id, _)| !current.contains_key(id)) {
            self.add_caught_up_learner(*id, &m.peer_addr).await?;
        }
        // 2. One joint change to the new voters (a demoted voter stays as a learner).
        if new != old {
            self.change(ChangeMembers::ReplaceAllVoters(new.clone()), true, &right)
                .await?;
        }
        // 3. Members that leave go.
        let gone: BTreeSet<NodeId> = current
            .keys()
            .filter(|id| !target.contains_key(id))
            .copied()
            .collect();
        if !gone.is_empty() && self.is_leader() {
            self.change(ChangeMembers::RemoveNodes(gone), false, &right)
                .await?;
        }
        if !self.is_leader() {
            return Err(ReconfigError::Failed(
                "the leader left the configuration; the new leader writes /zookeeper/config".into(),
            ));
        }
        // 4. The new configuration, with every member's client address.
        let mut shown = target;
        self.fill_client_addrs(&mut shown, &current).await;
        let cmd = Command::Config {
            origin: Some(order.origin),
            time_ms: crate::clock::now_ms(),
            members: spec::render(&shown),
            request: Some(order.describe()),
            session_id: order.session_id,
            auth: order.auth,
        };
        self.propose_config(cmd, STEP_TIMEOUT).await
    }

    /// The applied membership as ZooKeeper names it, with `/zookeeper/config`'s version;
    /// `InProgress` while a joint change is under way or `/zookeeper/config` does not show the
    /// membership yet (the leader's [`sync`] is about to rewrite it).
    fn config_in_effect(&self) -> Result<(Members, i64), ReconfigError> {
        let r = lock(&self.replica);
        let membership = r.membership.membership();
        if membership.get_joint_config().len() > 1 {
            return Err(ReconfigError::InProgress);
        }
        let (shown, version) = spec::parse_config(r.tree.config_text());
        let applied = members_of(membership);
        if !same_members(&applied, &shown) {
            return Err(ReconfigError::InProgress);
        }
        Ok((shown, version))
    }

    /// `NoQuorum` unless a majority of the new voters and of the current ones answer a probe
    /// and (if members already) are caught up with this leader.
    async fn check_new_quorum(
        &self,
        current: &Members,
        target: &Members,
        old: &BTreeSet<NodeId>,
        new: &BTreeSet<NodeId>,
    ) -> Result<(), ReconfigError> {
        let members: BTreeSet<NodeId> = old.union(new).copied().collect();
        let mut ok = crate::admin::membership::healthy(self, &members).await;
        // The joining servers not yet members, probed at once.
        let joining = new
            .difference(&ok)
            .filter(|id| !current.contains_key(id))
            .filter_map(|id| target.get(id).map(|m| (*id, m.peer_addr.clone())))
            .map(|(id, addr)| async move {
                let probe = PeerRequest::Touch(Vec::new());
                let reached = self.pool.call(id, &addr, probe, PROBE_TIMEOUT).await;
                (id, reached.is_ok())
            });
        for (id, reached) in futures_util::future::join_all(joining).await {
            if !reached {
                continue;
            }
            let cluster = crate::upgrade::cluster_version(self);
            if let Some(speaks) = self.local.versions.get(id).filter(|s| *s < cluster) {
                return Err(ReconfigError::BadArguments(format!(
                    "server.{id} runs an older release (peer protocol {speaks}) than the \
                     cluster version ({cluster})"
                )));
            }
            ok.insert(id);
        }
        for (name, set) in [("new", new), ("current", old)] {
            let up = set.intersection(&ok).count();
            if up < set.len() / 2 + 1 {
                let down: Vec<NodeId> = set.difference(&ok).copied().collect();
                return Err(ReconfigError::NoQuorum(format!(
                    "{up} of the {name} voters {set:?} are reachable and caught up (not: {down:?})"
                )));
            }
        }
        Ok(())
    }

    async fn add_caught_up_learner(&self, id: NodeId, addr: &str) -> Result<(), ReconfigError> {
        let add = self.raft.add_learner(id, BasicNode::new(addr), true);
        match tokio::time::timeout(STEP_TIMEOUT, add).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ReconfigError::Failed(format!("adding server.{id}: {e}"))),
            Err(_) => {
                return Err(ReconfigError::NoQuorum(format!(
                "server.{id} was added as a learner but did not catch up within {STEP_TIMEOUT:?}"
            )))
            }
        }
        if crate::admin::membership::learner_caught_up(self, id, STEP_TIMEOUT).await {
            Ok(())
        } else {
            Err(ReconfigError::NoQuorum(format!(
                "server.{id} was added as a learner but did not catch up within {STEP_TIMEOUT:?}"
            )))
        }
    }

    /// One membership step of a reconfig, under its `right` ([`Node::change_membership`]: it
    /// ends even if the reconfig stops waiting for it).
    async fn change(
        self: &Arc<Self>,
        change: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
        right: &ChangeRight,
    ) -> Result<(), ReconfigError> {
        let changed = self.change_membership(change, retain, right.clone());
        match tokio::time::timeout(STEP_TIMEOUT, changed).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ReconfigError::Failed(format!("membership change: {e}"))),
            Err(_) => Err(ReconfigError::Failed(format!(
                "the membership change did not commit within {STEP_TIMEOUT:?}"
            ))),
        }
    }

    /// Proposes a [`Command::Config`] and waits until it is applied on this leader, at most
    /// `timeout` (its callers hold the right to change the membership, which must not stay with
    /// a write that cannot commit, as without a quorum; the entry may still commit later).
    async fn propose_config(&self, cmd: Command, timeout: Duration) -> Result<(), ReconfigError> {
        let (tx, rx) = oneshot::channel();
        if self.proposals.send(Proposal::remote(cmd, tx)).is_err() {
            return Err(ReconfigError::Failed("node shutting down".into()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(ReconfigError::Failed(e.to_string())),
            Ok(Err(_)) => Err(ReconfigError::Failed("node shutting down".into())),
            Err(_) => Err(ReconfigError::Failed(format!(
                "/zookeeper/config's write was not applied within {timeout:?}"
            ))),
        }
    }

    /// Gives every member of `members` the client address it advertises: this node's own,
    /// the one `/zookeeper/config` shows now (`shown`) for a member at the same peer address,
    /// one it told before, or one it tells now (asked over the peer port); else the spec's.
    async fn fill_client_addrs(&self, members: &mut Members, shown: &Members) {
        for (id, m) in members.iter_mut() {
            if *id == self.id {
                m.client_addr = Some(self.cfg.advertise_client_addr.clone());
                continue;
            }
            if let Some(s) = shown.get(id).filter(|s| s.peer_addr == m.peer_addr) {
                if s.client_addr.is_some() {
                    m.client_addr = s.client_addr.clone();
                    continue;
                }
            }
            let known = lock_addrs(&self.reconfigs)
                .get(id)
                .filter(|(peer, _)| *peer == m.peer_addr)
                .map(|(_, client)| client.clone());
            if let Some(client) = known {
                m.client_addr = Some(client);
                continue;
            }
            let answer = self
                .pool
                .call(*id, &m.peer_addr, PeerRequest::Describe, PROBE_TIMEOUT)
                .await;
            if let Ok(PeerResponse::Describe(d)) = answer {
                lock_addrs(&self.reconfigs)
                    .insert(*id, (m.peer_addr.clone(), d.client_addr.clone()));
                m.client_addr = Some(d.client_addr);
            }
        }
    }
}

fn lock_addrs(r: &Reconfigs) -> std::sync::MutexGuard<'_, HashMap<NodeId, (String, String)>> {
    r.client_addrs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `/zookeeper/config` does not show this node's applied membership (while the
/// cluster version has it): the leader's [`sync`] is about to write it.
pub fn config_pending(node: &Node) -> bool {
    if crate::upgrade::cluster_version(node) < CONFIG_NODE_SINCE {
        return false;
    }
    let r = lock(&node.replica);
    let (shown, _) = spec::parse_config(r.tree.config_text());
    !same_members(&members_of(r.membership.membership()), &shown)
}

/// A reconfig's arguments, parsed.
enum Change {
    /// `-add` / `-remove`.
    Incremental {
        joining: Members,
        leaving: Vec<NodeId>,
    },
    /// `-members`: the whole new configuration.
    Replace(Members),
}

/// A reconfig's arguments, parsed as ZooKeeper parses them: new members, if given, win over
/// joining and leaving servers; an incremental joiner must name its client address.
fn parse(order: &ReconfigOrder) -> Result<Change, ReconfigError> {
    if !order.new_members.trim().is_empty() {
        return Ok(Change::Replace(spec::parse_servers(&order.new_members)?));
    }
    let joining = spec::parse_servers(&order.joining)?;
    if let Some((id, _)) = joining.iter().find(|(_, m)| m.client_addr.is_none()) {
        return Err(ReconfigError::BadArguments(format!(
            "server.{id}: a joining server needs its client address (...;host:port)"
        )));
    }
    Ok(Change::Incremental {
        joining,
        leaving: spec::parse_ids(&order.leaving)?,
    })
}

/// The configuration `change` makes of `current`.
fn target_of(current: &Members, change: Change) -> Result<Members, ReconfigError> {
    let target = match change {
        Change::Replace(members) => members,
        Change::Incremental { joining, leaving } => {
            let mut target = current.clone();
            for id in &leaving {
                if joining.contains_key(id) {
                    return Err(ReconfigError::BadArguments(format!(
                        "server.{id} both joins and leaves"
                    )));
                }
                target.remove(id);
            }
            for (id, m) in joining {
                target.insert(id, m);
            }
            target
        }
    };
    for (id, m) in &target {
        if let Some(c) = current.get(id).filter(|c| c.peer_addr != m.peer_addr) {
            return Err(ReconfigError::BadArguments(format!(
                "server.{id} is a member at {}; remove it before adding it at {}",
                c.peer_addr, m.peer_addr
            )));
        }
    }
    if voters(&target).is_empty() {
        return Err(ReconfigError::BadArguments(
            "the new configuration has no participant".into(),
        ));
    }
    Ok(target)
}

fn voters(members: &Members) -> BTreeSet<NodeId> {
    members
        .iter()
        .filter(|(_, m)| m.role == Role::Participant)
        .map(|(id, _)| *id)
        .collect()
}

/// A Raft membership as ZooKeeper names it (no client addresses).
fn members_of(m: &openraft::Membership<NodeId, BasicNode>) -> Members {
    let voters: BTreeSet<NodeId> = m.voter_ids().collect();
    m.nodes()
        .map(|(id, n)| {
            let role = if voters.contains(id) {
                Role::Participant
            } else {
                Role::Observer
            };
            let member = Member {
                peer_addr: n.addr.clone(),
                role,
                client_addr: None,
            };
            (*id, member)
        })
        .collect()
}

/// Whether two configurations have the same members, roles and peer addresses.
fn same_members(a: &Members, b: &Members) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ia, ma), (ib, mb))| {
            ia == ib && ma.peer_addr == mb.peer_addr && ma.role == mb.role
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &str) -> Members {
        spec::parse_servers(list).unwrap()
    }

    #[test]
    fn targets_of_incremental_and_whole_changes() {
        let current = members("server.1=h:1:0,server.2=h:2:0,server.3=h:3:0");
        let add = Change::Incremental {
            joining: members("server.4=h:4:0:observer;h:14"),
            leaving: vec![3],
        };
        let t = target_of(&current, add).unwrap();
        assert_eq!(t.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4]);
        assert_eq!(voters(&t), BTreeSet::from([1, 2]));
        let moved = Change::Incremental {
            joining: members("server.2=other:2:0"),
            leaving: vec![],
        };
        assert!(matches!(
            target_of(&current, moved),
            Err(ReconfigError::BadArguments(_))
        ));
        let none = Change::Replace(members("server.1=h:1:0:observer"));
        assert!(matches!(
            target_of(&current, none),
            Err(ReconfigError::BadArguments(_))
        ));
        let promote = Change::Incremental {
            joining: members("server.3=h:3:0:observer"),
            leaving: vec![],
        };
        assert_eq!(
            voters(&target_of(&current, promote).unwrap()),
            BTreeSet::from([1, 2])
        );
    }
}
