//! Linearizable reads: a read point is an index such that every write acknowledged before it
//! was asked for is at or below it (openraft's read index: a heartbeat round to a quorum, on
//! the leader). Reads queued while a round is in flight share the next round. The leader
//! confirms a point without a round on saved votes ([`votes_read_point`]): for its own reads
//! (and a follower's plain request) it asks followers for the vote their log stores last made
//! durable, and decides once enough answers name it to make a majority with it — one answer of
//! three voters, two of four or five. It asks as many followers as it needs answers, those
//! that answered first last time ([`VoteAsking`]); the next one when an asked one cannot tell,
//! and all the rest once the asked ones take longer than usual. A follower of three voters
//! sends its own saved vote with its request, which is enough alone. A reader then waits until
//! its node has applied the point.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use openraft::{LogId, Raft, RaftState, ServerState, Vote};
use synod_raft_store::types::{
    NodeId, LEADER_READ_ON_FOLLOWER_VOTE_SINCE, READ_INDEX_FOLLOWING_SINCE,
};
use synod_raft_store::TypeConfig;
use tokio::sync::{mpsc, oneshot};

use crate::error::ReadIndexError;
use crate::node::{Node, ReadWaiter};
use crate::peer::{PeerRequest, PeerResponse};
use crate::pipeline::proposer::LEADER_CALL_TIMEOUT;

impl Node {
    /// A linearizable read point: an index such that every write acknowledged before this call is
    /// at or below it. Calls made while a round is in flight share the next round. The call is
    /// queued when made, not when the future is first polled, and the future borrows nothing.
    pub fn read_index(
        &self,
    ) -> impl std::future::Future<Output = Result<u64, ReadIndexError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let queued = self.read_waiters.send(tx);
        async move {
            queued.map_err(|_| ReadIndexError::ShuttingDown)?;
            rx.await.map_err(|_| ReadIndexError::ShuttingDown)?
        }
    }

    /// Whether this node has applied `index` already: a read at that point need not wait.
    pub fn has_applied(&self, index: u64) -> bool {
        *self.applied.borrow() >= index
    }

    /// Waits until this node has applied `index` (bounded).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ReadIndexError> {
        if self.has_applied(index) {
            return Ok(());
        }
        let mut rx = self.applied.clone();
        let res = tokio::time::timeout(timeout, async move {
            rx.wait_for(|a| *a >= index).await.map(|_| ())
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ReadIndexError::ShuttingDown),
            Err(_) => Err(ReadIndexError::NotCaughtUp { index, timeout }),
        }
    }

    /// A linearizable barrier: waits until this node has applied everything acknowledged before.
    pub async fn sync_barrier(&self) -> Result<(), ReadIndexError> {
        let idx = self.read_index().await?;
        self.wait_applied(idx, LEADER_CALL_TIMEOUT).await
    }

    /// One round: the leader's own ([`Node::read_point_on_followers_votes`], else a heartbeat
    /// round), or a request to the leader. A request to a leader that stops answering once it
    /// has the request (paused, or cut off after its host acknowledged it) would hold this
    /// node's every read until it answers or [`LEADER_CALL_TIMEOUT`] passes, since rounds run
    /// one at a time: so a request is abandoned as soon as this node knows another leader, and
    /// the round asks that one (at most [`LEADER_CHANGES_PER_ROUND`] times). The reads began
    /// before either request, so the new leader's point serves them as well.
    async fn read_index_round(&self) -> Result<u64, ReadIndexError> {
        for _ in 0..LEADER_CHANGES_PER_ROUND {
            match self.leader() {
                Some((id, _)) if id == self.id => {
                    return match self.read_point_on_followers_votes().await {
                        Some(point) => Ok(point),
                        None => leader_read_index(&self.raft).await,
                    }
                }
                Some((id, addr)) => {
                    let req = match self.vote_naming(id) {
                        Some(vote) => PeerRequest::ReadIndexFollowing {
                            follower: self.id,
                            vote,
                        },
                        None => PeerRequest::ReadIndex,
                    };
                    tokio::select! {
                        r = self.ask_leader_for_read_point(id, &addr, req) => return r,
                        () = self.another_leader_than(id) => {
                            metrics::counter!("synod_read_point_leader_changes_total").increment(1);
                        }
                    }
                }
                None => return Err(ReadIndexError::NoLeader),
            }
        }
        Err(ReadIndexError::NoLeader)
    }

    /// Sends a read-point request to the leader `id` at `addr`.
    async fn ask_leader_for_read_point(
        &self,
        id: NodeId,
        addr: &str,
        req: PeerRequest,
    ) -> Result<u64, ReadIndexError> {
        match self.pool.call(id, addr, req, LEADER_CALL_TIMEOUT).await {
            Ok(PeerResponse::ReadIndex(Ok(i))) => Ok(i),
            Ok(PeerResponse::ReadIndex(Err(e))) => Err(e.into()),
            Ok(other) => Err(ReadIndexError::UnexpectedReply(other.variant_name())),
            Err(e) => Err(e.into()),
        }
    }

    /// The vote this node's log store last made durable, if it names `leader` and every member
    /// reads [`PeerRequest::ReadIndexFollowing`]. Not the metrics' vote, which may lag behind a
    /// vote already granted to a newer candidate; not the Raft core's either, which is never
    /// behind the saved one but answers only after the append it is syncing (up to a
    /// millisecond under write load): openraft saves a vote before it grants or acts on it, so
    /// while the saved vote names `leader` this node has granted no later one
    /// ([`SavedVote`](synod_raft_store::log_store::SavedVote)). Not offered unless the
    /// configuration, as the metrics show it, has three voters and is not joint: with more, one
    /// follower's vote is not enough, and the leader asks the others for theirs anyway (its own
    /// reads' path). (Only a shortcut: the leader decides on its own core's configuration.)
    fn vote_naming(&self, leader: NodeId) -> Option<Vote<NodeId>> {
        if !crate::upgrade::cluster_has(self, READ_INDEX_FOLLOWING_SINCE) {
            return None;
        }
        if self.one_config_voters()?.len() != 3 {
            return None;
        }
        let vote = self.saved_vote.get()?;
        (vote.leader_id().voted_for() == Some(leader)).then_some(vote)
    }

    /// On the leader, for its own reads and a follower's plain request: a read point without a
    /// heartbeat round, on the saved votes ([`PeerRequest::SavedVote`]) of its followers, asked
    /// now, after those reads began — if every member reads that request, the metrics show one
    /// configuration (not joint) with this node among its voters, and enough followers answer
    /// (each within the heartbeat interval) with a vote naming this node that, with its own,
    /// they make a majority of the voters, which [`votes_read_point`] then checks in this node's
    /// Raft core. `None` otherwise: a heartbeat round it is.
    ///
    /// It asks as many followers as it needs answers, those whose answers made the last point
    /// first ([`VoteAsking`]): asking every follower made each round cost every follower a
    /// request and this node an answer it did not need (with three voters, half of the
    /// saved-vote requests). The next follower is asked as soon as an asked one answers without
    /// a vote naming this node (or fails), and all the rest once the asked ones take longer
    /// than [`VoteAsking::hedge`]: a follower that is down, paused or cut off costs the first
    /// round after it stopped that wait, and none after, since it is then no longer asked
    /// first. Each answer may take the heartbeat interval, so a round without enough answers
    /// ends within that and the hedge. Which followers are asked changes nothing of what an
    /// answer must show.
    async fn read_point_on_followers_votes(&self) -> Option<u64> {
        if !crate::upgrade::cluster_has(self, LEADER_READ_ON_FOLLOWER_VOTE_SINCE) {
            return None;
        }
        let voters = self.one_config_voters()?;
        if voters.iter().all(|(id, _)| *id != self.id) {
            return None;
        }
        // Votes needed besides this node's for a majority of the voters, and the leadership
        // they must name (this node's own saved vote: a stale answer is not waited for).
        let needed = voters.len() / 2;
        let mine = *self.saved_vote.get()?.leader_id();
        let followers: Vec<(NodeId, String)> = voters
            .into_iter()
            .filter(|(id, _)| *id != self.id)
            .collect();
        let mut rest = self.vote_asking.in_order(followers).into_iter();
        let ask = |(id, addr): (NodeId, String)| {
            let answer = self.ask_saved_vote(id, addr, self.cfg.heartbeat);
            async move { (id, answer.await) }
        };
        let started = Instant::now();
        let mut asked: FuturesUnordered<_> = rest.by_ref().take(needed).map(ask).collect();
        let hedge = tokio::time::sleep(self.vote_asking.hedge(self.cfg.heartbeat));
        tokio::pin!(hedge);
        let mut hedged = false;
        let mut votes = Vec::with_capacity(needed);
        while votes.len() < needed {
            tokio::select! {
                biased;
                Some(answer) = asked.next(), if !asked.is_empty() => match answer {
                    (id, Some(Some(vote))) if *vote.leader_id() == mine => votes.push((id, vote)),
                    // It cannot vouch for this leadership: ask the next one now.
                    _ => asked.extend(rest.next().map(ask)),
                },
                () = &mut hedge, if !hedged && rest.len() > 0 => {
                    hedged = true;
                    metrics::counter!("synod_read_point_hedges_total").increment(1);
                    asked.extend(rest.by_ref().map(ask));
                }
                else => return None,
            }
        }
        if needed > 0 {
            self.vote_asking.answered(&votes, started.elapsed());
        }
        self.read_point_on_votes(votes).await
    }

    /// The voters and their peer addresses, if the metrics show one configuration, not joint:
    /// only then can saved votes stand in for a heartbeat round. (Only a shortcut: the leader
    /// decides on its own core's configuration.)
    fn one_config_voters(&self) -> Option<Vec<(NodeId, String)>> {
        let [voters]: [Vec<(NodeId, String)>; 1] = self.voters_seen().try_into().ok()?;
        Some(voters)
    }

    /// On the leader: [`votes_read_point`] for the followers' `votes`, decided in this node's
    /// Raft core now, and counted when it gives a point. The future borrows nothing.
    fn read_point_on_votes(
        &self,
        votes: Vec<(NodeId, Vote<NodeId>)>,
    ) -> impl std::future::Future<Output = Option<u64>> + Send + 'static {
        let me = self.id;
        let (tx, rx) = oneshot::channel();
        self.raft.external_request(move |st| {
            let facts = LeaderFacts::of(st);
            let _ = tx.send(votes_read_point(&facts, me, &votes));
        });
        async move {
            let point = rx.await.ok()??;
            metrics::counter!("synod_read_points_total", "how" => "follower_vote").increment(1);
            Some(point)
        }
    }

    /// On the leader: the read point for a follower's [`PeerRequest::ReadIndexFollowing`] —
    /// without a heartbeat round if [`votes_read_point`] allows it on that follower's vote
    /// alone (three voters), else as for [`PeerRequest::ReadIndex`]: the next shared read
    /// point. The future borrows nothing.
    pub fn read_index_following(
        &self,
        follower: NodeId,
        vote: Vote<NodeId>,
    ) -> impl std::future::Future<Output = Result<u64, ReadIndexError>> + Send + 'static {
        let on_vote = self.read_point_on_votes(vec![(follower, vote)]);
        let node = self.self_arc();
        async move {
            if let Some(point) = on_vote.await {
                return Ok(point);
            }
            match node {
                Some(node) => node.read_index().await,
                None => Err(ReadIndexError::ShuttingDown),
            }
        }
    }
}

/// What the leader's Raft core holds at one moment that decides whether followers' votes can
/// stand in for a heartbeat round ([`votes_read_point`]).
#[derive(Debug, Clone)]
struct LeaderFacts {
    /// The core is in the leader state.
    leading: bool,
    /// Its vote (a leader's is committed and names itself).
    vote: Vote<NodeId>,
    /// Its commit index.
    committed: Option<LogId<NodeId>>,
    /// The voters of its effective configuration: one set, or two while joint.
    voters: Vec<Vec<NodeId>>,
    /// The effective configuration is committed (no change of it is under way).
    membership_committed: bool,
}

impl LeaderFacts {
    fn of<I>(st: &RaftState<NodeId, openraft::BasicNode, I>) -> LeaderFacts
    where
        I: openraft::Instant,
    {
        let effective = st.membership_state.effective();
        LeaderFacts {
            leading: st.server_state == ServerState::Leader,
            vote: *st.vote_ref(),
            committed: st.committed,
            voters: effective
                .membership()
                .get_joint_config()
                .iter()
                .map(|c| c.iter().copied().collect())
                .collect(),
            membership_committed: effective.log_id() == st.membership_state.committed().log_id(),
        }
    }
}

/// How many times one read round moves on to a newly known leader before it gives up
/// ([`Node::read_index_round`]); more changes than that during one round is an election storm.
const LEADER_CHANGES_PER_ROUND: usize = 3;

/// The least the leader waits for the followers it asked first before it asks the rest: ten
/// times or more a loopback round trip to a sleeping process (10–27 µs on the benchmark
/// machine), so that a follower answering from the same host is not hedged against.
const MIN_HEDGE: Duration = Duration::from_micros(250);

/// How many times their usual answer time the leader waits for the followers it asked first.
const HEDGE_FACTOR: u64 = 4;

/// The leader's memory of its followers' answers to [`PeerRequest::SavedVote`]: whom to ask
/// first, and how long they usually take. Only an ordering and a patience: which answers count
/// is decided by [`votes_read_point`] alone.
#[derive(Debug, Default)]
pub(crate) struct VoteAsking {
    /// The followers whose answers made the last read point, first answer first: asked first
    /// in the next round. Empty before the first.
    first: Mutex<Vec<NodeId>>,
    /// Exponentially weighted mean (1/8 per round) of a round's time from asking to the last
    /// needed answer, in µs, over the rounds that got their point (a round that had to wait
    /// for the hedge counts too, so that the mean follows answers slower than the hedge
    /// instead of never learning them); 0 before the first.
    answer_us: AtomicU64,
}

impl VoteAsking {
    /// `followers` with the ones that answered first last time ahead, in that order; the others
    /// keep their order.
    fn in_order(&self, mut followers: Vec<(NodeId, String)>) -> Vec<(NodeId, String)> {
        let first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        followers.sort_by_key(|(id, _)| first.iter().position(|f| f == id).unwrap_or(usize::MAX));
        followers
    }

    /// How long to wait for the followers asked first before asking the rest:
    /// [`HEDGE_FACTOR`] times their usual time, at least [`MIN_HEDGE`], at most a quarter of
    /// the heartbeat interval (each answer may take the whole interval).
    fn hedge(&self, heartbeat: Duration) -> Duration {
        let usual =
            Duration::from_micros(self.answer_us.load(Relaxed).saturating_mul(HEDGE_FACTOR));
        usual.clamp(MIN_HEDGE, (heartbeat / 4).max(MIN_HEDGE))
    }

    /// A round got its point on `votes` (at least one), `took` after it began asking.
    fn answered(&self, votes: &[(NodeId, Vote<NodeId>)], took: Duration) {
        debug_assert!(
            !votes.is_empty(),
            "a round that needed no answer asked no one"
        );
        *self.first.lock().unwrap_or_else(PoisonError::into_inner) =
            votes.iter().map(|(id, _)| *id).collect();
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let old = self.answer_us.load(Relaxed);
        let new = if old == 0 { us } else { old - old / 8 + us / 8 };
        self.answer_us.store(new, Relaxed);
    }
}

/// The read point a leader may give, without a heartbeat round, for reads that began before
/// each of its followers in `votes` read its vote there (the vote its log store last made
/// durable): its commit index, if
/// - this node leads (its vote is committed and names it);
/// - the configuration is committed and not joint, with this node among its voters;
/// - the followers of `votes` that are voters, other than this node, and whose votes name this
///   leader in its term, are enough to make a majority of the voters with it (one of three,
///   two of four or five; counted once each);
/// - this node has committed an entry of its own term.
///
/// Otherwise `None`: the read point needs a heartbeat round.
///
/// Why it is linearizable. Call S this node and those followers: a majority of the voters. A
/// write acknowledged before the reads began was committed in some term. In this leader's term
/// or before, it is in this leader's log (Raft's leader completeness) and at or below its
/// commit index, which covers its own term's entry. In a later term, its leader was elected
/// before the reads began, by a majority of the voters (a later configuration is reached only
/// through a joint one that needs a majority of these voters too, and this configuration is
/// committed): a majority that includes a member of S, since two majorities of one set meet.
/// No follower of S had voted in a later term when it read its vote, after the reads began (a
/// vote is made durable before it is granted, and votes only grow), and this leader has not (it
/// still holds its own term's vote now). So there is no such write.
///
/// This rests on two rules of openraft 0.9.25 that an upgrade of openraft must check again: a
/// configuration changes only through a joint one, and not while another change is
/// uncommitted; and a vote is saved before it is granted or entries are accepted under it
/// (`SaveVote` is queued before the response, and the core runs its commands in order).
fn votes_read_point(
    facts: &LeaderFacts,
    me: NodeId,
    votes: &[(NodeId, Vote<NodeId>)],
) -> Option<u64> {
    let leading = facts.leading
        && facts.vote.is_committed()
        && facts.vote.leader_id().voted_for() == Some(me);
    if !leading || !facts.membership_committed {
        return None;
    }
    let [voters] = facts.voters.as_slice() else {
        return None;
    };
    if !voters.contains(&me) {
        return None;
    }
    let mut backing: Vec<NodeId> = votes
        .iter()
        .filter(|(follower, vote)| {
            *follower != me
                && voters.contains(follower)
                && vote.leader_id() == facts.vote.leader_id()
        })
        .map(|(follower, _)| *follower)
        .collect();
    backing.sort_unstable();
    backing.dedup();
    // This node's vote and the followers': a majority of the voters?
    if backing.len() < voters.len() / 2 {
        return None;
    }
    let committed = facts.committed?;
    (committed.leader_id == *facts.vote.leader_id()).then_some(committed.index)
}

/// One read-index round at a time; waiters queued during a round share the next one.
pub async fn read_index_loop(node: Arc<Node>, mut rx: mpsc::UnboundedReceiver<ReadWaiter>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
        }
        let r = node.read_index_round().await;
        for w in batch {
            let _ = w.send(r.clone());
        }
    }
}

/// On the leader: a read point confirmed by a heartbeat round to a quorum (openraft's read index:
/// the commit index, or this term's first entry if later).
pub async fn leader_read_index(raft: &Raft<TypeConfig>) -> Result<u64, ReadIndexError> {
    metrics::counter!("synod_read_points_total", "how" => "quorum_round").increment(1);
    raft.get_read_log_id()
        .await
        .map(|(read, _)| read.map(|l| l.index).unwrap_or(0))
        .map_err(|e| ReadIndexError::Raft(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn addrs(ids: &[NodeId]) -> Vec<(NodeId, String)> {
        ids.iter().map(|&id| (id, format!("n{id}:7001"))).collect()
    }

    fn ids(followers: &[(NodeId, String)]) -> Vec<NodeId> {
        followers.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn the_followers_that_answered_first_are_asked_first() {
        let asking = VoteAsking::default();
        // Before any answer: the configuration's order.
        assert_eq!(ids(&asking.in_order(addrs(&[2, 3, 4, 5]))), [2, 3, 4, 5]);
        let vote = Vote::new_committed(5, 1);
        asking.answered(&[(4, vote), (2, vote)], Duration::from_micros(100));
        assert_eq!(ids(&asking.in_order(addrs(&[2, 3, 4, 5]))), [4, 2, 3, 5]);
        // A follower no longer among the voters is simply not asked.
        assert_eq!(ids(&asking.in_order(addrs(&[3, 2, 5]))), [2, 3, 5]);
    }

    #[test]
    fn the_wait_for_the_first_asked_follows_their_answers_within_bounds() {
        let heartbeat = Duration::from_millis(100);
        let asking = VoteAsking::default();
        assert_eq!(asking.hedge(heartbeat), MIN_HEDGE, "no answer yet");
        let vote = Vote::new_committed(5, 1);
        asking.answered(&[(2, vote)], Duration::from_micros(500));
        assert_eq!(asking.hedge(heartbeat), Duration::from_micros(2_000));
        // Each round weighs 1/8, one that waited for the hedge too: answers slower than the
        // hedge raise it.
        asking.answered(&[(3, vote)], Duration::from_micros(4_500));
        assert_eq!(asking.answer_us.load(Relaxed), 500 - 500 / 8 + 4_500 / 8);
        // Never below the floor, never above a quarter of the heartbeat interval.
        asking.answered(&[(3, vote)], Duration::from_secs(1));
        assert_eq!(asking.hedge(heartbeat), heartbeat / 4);
        assert_eq!(asking.hedge(Duration::from_micros(400)), MIN_HEDGE);
    }

    /// Leader 1 in term 5 of the voters {1, 2, 3}, committed up to index 40 of its own term.
    fn leading() -> LeaderFacts {
        LeaderFacts {
            leading: true,
            vote: Vote::new_committed(5, 1),
            committed: Some(LogId::new(CommittedLeaderId::new(5, 1), 40)),
            voters: vec![vec![1, 2, 3]],
            membership_committed: true,
        }
    }

    /// [`votes_read_point`] on one follower's vote.
    fn on_vote(
        facts: &LeaderFacts,
        me: NodeId,
        follower: NodeId,
        vote: Vote<NodeId>,
    ) -> Option<u64> {
        votes_read_point(facts, me, &[(follower, vote)])
    }

    #[test]
    fn a_follower_of_this_leader_in_its_term_gets_the_commit_index_of_three_voters() {
        let follows = Vote::new_committed(5, 1);
        assert_eq!(on_vote(&leading(), 1, 2, follows), Some(40));
        // A vote granted to this leader as a candidate, not yet committed, is as good: the
        // follower had not voted in a later term.
        assert_eq!(on_vote(&leading(), 1, 3, Vote::new(5, 1)), Some(40));
    }

    #[test]
    fn more_voters_need_as_many_votes_as_make_a_majority_with_the_leader() {
        let follows = Vote::new_committed(5, 1);
        let of = |voters: Vec<NodeId>| LeaderFacts {
            voters: vec![voters],
            ..leading()
        };
        let five = of(vec![1, 2, 3, 4, 5]);
        // One of four followers is not enough; two are, whichever two.
        assert_eq!(on_vote(&five, 1, 2, follows), None);
        assert_eq!(
            votes_read_point(&five, 1, &[(2, follows), (5, follows)]),
            Some(40)
        );
        assert_eq!(
            votes_read_point(&five, 1, &[(4, Vote::new(5, 1)), (3, follows)]),
            Some(40)
        );
        // A vote counts once, and only a voter's that names this leader in its term counts.
        assert_eq!(
            votes_read_point(&five, 1, &[(2, follows), (2, follows)]),
            None
        );
        assert_eq!(
            votes_read_point(&five, 1, &[(2, follows), (6, follows)]),
            None
        );
        assert_eq!(
            votes_read_point(&five, 1, &[(2, follows), (1, follows)]),
            None
        );
        assert_eq!(
            votes_read_point(&five, 1, &[(2, follows), (3, Vote::new_committed(6, 3))]),
            None
        );
        assert_eq!(
            votes_read_point(&five, 1, &[(2, follows), (3, Vote::new(5, 3))]),
            None
        );
        // Extra votes do no harm.
        assert_eq!(
            votes_read_point(
                &five,
                1,
                &[(2, follows), (3, Vote::new_committed(6, 3)), (4, follows)]
            ),
            Some(40)
        );
        // Four voters: three of them are a majority, so two followers as with five.
        let four = of(vec![1, 2, 3, 4]);
        assert_eq!(on_vote(&four, 1, 2, follows), None);
        assert_eq!(
            votes_read_point(&four, 1, &[(2, follows), (4, follows)]),
            Some(40)
        );
        // This node outside the voters (a leader removed by the change it led) confirms nothing.
        assert_eq!(
            votes_read_point(&of(vec![2, 3, 4]), 1, &[(2, follows), (3, follows)]),
            None
        );
        // A lone voter is a majority by itself.
        assert_eq!(votes_read_point(&of(vec![1]), 1, &[]), Some(40));
        assert_eq!(votes_read_point(&leading(), 1, &[]), None);
    }

    #[test]
    fn anything_else_needs_a_heartbeat_round() {
        let follows = Vote::new_committed(5, 1);
        let refused = |facts: LeaderFacts, me: NodeId, follower: NodeId, vote: Vote<NodeId>| {
            assert_eq!(
                on_vote(&facts, me, follower, vote),
                None,
                "{facts:?}, me {me}, follower {follower}, vote {vote}"
            );
        };
        // Not leading, or not this node's leadership.
        refused(
            LeaderFacts {
                leading: false,
                ..leading()
            },
            1,
            2,
            follows,
        );
        refused(
            LeaderFacts {
                vote: Vote::new(5, 1),
                ..leading()
            },
            1,
            2,
            Vote::new(5, 1),
        );
        refused(leading(), 2, 3, follows);
        // The follower's vote names another leader, or this one in another term.
        refused(leading(), 1, 2, Vote::new_committed(5, 3));
        refused(leading(), 1, 2, Vote::new_committed(4, 1));
        refused(leading(), 1, 2, Vote::new_committed(6, 1));
        // The sender is this node.
        refused(leading(), 1, 1, follows);
        // A follower outside the voters (a learner).
        refused(leading(), 1, 4, follows);
        // Five voters (one follower's vote is not enough), a joint configuration, or one not
        // yet committed.
        refused(
            LeaderFacts {
                voters: vec![vec![1, 2, 3, 4, 5]],
                ..leading()
            },
            1,
            2,
            follows,
        );
        refused(
            LeaderFacts {
                voters: vec![vec![1, 2, 3], vec![1, 2, 4]],
                ..leading()
            },
            1,
            2,
            follows,
        );
        refused(
            LeaderFacts {
                membership_committed: false,
                ..leading()
            },
            1,
            2,
            follows,
        );
        // Nothing of this term committed yet: the commit index may miss an earlier leader's.
        refused(
            LeaderFacts {
                committed: Some(LogId::new(CommittedLeaderId::new(4, 2), 39)),
                ..leading()
            },
            1,
            2,
            follows,
        );
        refused(
            LeaderFacts {
                committed: None,
                ..leading()
            },
            1,
            2,
            follows,
        );
    }
}
