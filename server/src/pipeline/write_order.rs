//! A connection's writes kept in order across a change of leader ([`WriteOrder`]): the proposer
//! sends a connection's write to a leader only while every earlier write of that connection
//! still in flight went by the same route (the same leader, in the same term, on a follower over
//! the same stream of forwards), and none has failed.
//!
//! Why: a client may pipeline writes W1, W2 on one connection, and ZooKeeper promises they take
//! effect in that order — in particular, never W2 without W1. The proposer routes each write to
//! the leader its Raft metrics name *when the write reaches it*. If the leader changes between
//! W1 and W2, W1 may sit with the old leader (paused, cut off, deposed before replicating it)
//! while W2 commits with the new one; W1 is then lost (an entry of the old term that the new
//! leader's log does not hold never commits once the new leader commits anything). Both
//! replies fail (W1's failure closes the connection, and replies go out in order), but the
//! client would find W2's effect without W1's. ZooKeeper closes every client connection of a
//! follower that loses its leader, so a connection's writes never straddle two leaders; here
//! the proposer refuses W2 instead (its connection closes the same way).
//!
//! The rule, per connection: a write is admitted for a [`Route`] only if the connection has no
//! write in flight or they all went by that route; once one of its writes has failed (its
//! outcome unknown, or refused as above), every later one is refused. A route names the leader,
//! its term, and on a follower the ordered link the forwards travel on
//! ([`crate::peer::CallStream`]: one peer connection; a follower starts a new one after the
//! connection breaks, since what the broken one carried may be lost). A `reconfig`, which goes
//! to the leader its own way ([`crate::reconfig`]), is admitted only alone
//! ([`WriteOrder::admit_alone`]). The state lives with the connection, so it is bounded by the
//! connections and needs no cleanup.
//!
//! The leader keeps one more order per peer connection, over the writes a follower forwards on
//! it ([`crate::peer::PeerService::open`] for the node). A leader deposed and re-elected while
//! the follower still believes it leads in the old term (so the follower's route does not
//! change) could otherwise fail W1 at its step-down and accept W2 after its re-election, if
//! W2's frame reached it only after a whole election: the follower cannot see a change of term
//! it has not heard of, the leader can. So the leader admits a connection's forwards for its
//! own route (itself, in its current term) by the same rule, and refuses them all once one has
//! failed; the connection is then spent and closed (once the answers of the requests it had
//! taken are written, [`crate::peer::PeerService::spent`]), and the follower's next forwards go
//! on a new one, a new route. No protocol change: it needs only what followers do from
//! release 0.5.8 (one stream of forwards per route, each client connection in order).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use synod_raft_store::NodeId;

use crate::error::OutOfOrder;

/// Where a write was sent: the leader its node's Raft metrics named, in the term they named, and
/// by which link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The leader's id (this node's own when it leads).
    pub leader: NodeId,
    /// The term in which the metrics showed it leading: a leader deposed and re-elected may
    /// have lost what it held in the earlier term.
    pub term: u64,
    /// On a follower, which of its forward streams to the leader carried it (a new one after
    /// each broken connection); 0 on the leader itself.
    pub link: u64,
}

/// See the module documentation. One per client connection, shared by its reader (which
/// proposes, and breaks the order if the proposer is gone) and the proposer (which admits and
/// settles); and one per peer connection, over the writes a follower forwards on it, shared
/// by the peer service (which hands them to the proposer, and breaks the order if the proposer
/// is gone) and the proposer.
#[derive(Debug, Default)]
pub struct WriteOrder {
    /// The connection's writes queued and in flight; locked briefly, by one connection's tasks
    /// and the proposer.
    state: Mutex<OrderState>,
}

#[derive(Debug, Default)]
struct OrderState {
    /// Writes handed to the proposer and not yet admitted or refused ([`Queued`]): a write
    /// admitted alone must not overtake them.
    queued: u32,
    /// Where the writes in flight went (`None` for a write admitted alone). Meaningful only
    /// while `in_flight > 0`.
    route: Option<Route>,
    /// Writes admitted whose outcome is not known yet.
    in_flight: u32,
    /// A write of the connection failed or was refused: every later one is refused. Never
    /// cleared (the connection is closing).
    broken: bool,
}

impl WriteOrder {
    pub fn new() -> Arc<WriteOrder> {
        Arc::new(WriteOrder::default())
    }

    fn state(&self) -> MutexGuard<'_, OrderState> {
        // The state is a few fields set together; a panic elsewhere cannot leave it half set.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits the connection's next write for `route`, or refuses it (and every later one).
    /// The returned [`InFlight`] must be settled with the write's outcome.
    pub fn admit(self: &Arc<Self>, route: Route) -> Result<InFlight, OutOfOrder> {
        let mut s = self.state();
        if s.broken {
            return Err(OutOfOrder::EarlierFailed);
        }
        if s.in_flight > 0 {
            match s.route {
                Some(was) if was == route => {}
                Some(was) => {
                    s.broken = true;
                    return Err(OutOfOrder::LeaderChanged { was, now: route });
                }
                None => {
                    s.broken = true;
                    return Err(OutOfOrder::NotAlone);
                }
            }
        }
        s.route = Some(route);
        s.in_flight += 1;
        Ok(InFlight {
            order: Some(self.clone()),
        })
    }

    /// Notes a write handed to the proposer, which admits or refuses it later; the returned
    /// [`Queued`] goes with it ([`crate::node::Proposal::order`]).
    pub fn queue(self: &Arc<Self>) -> Queued {
        self.state().queued += 1;
        Queued(self.clone())
    }

    /// Admits a write that goes to the leader by a way of its own, ordered with nothing else
    /// (a `reconfig`): only while no other write of the connection is queued for the proposer
    /// or in flight, and none is admitted until it is settled.
    pub fn admit_alone(self: &Arc<Self>) -> Result<InFlight, OutOfOrder> {
        let mut s = self.state();
        if s.broken {
            return Err(OutOfOrder::EarlierFailed);
        }
        if s.in_flight > 0 || s.queued > 0 {
            s.broken = true;
            return Err(OutOfOrder::NotAlone);
        }
        s.route = None;
        s.in_flight = 1;
        Ok(InFlight {
            order: Some(self.clone()),
        })
    }

    /// A write of the connection failed before it was admitted (no leader known, node shutting
    /// down): every later one is refused.
    pub fn break_off(&self) {
        self.state().broken = true;
    }

    /// Whether a write of the connection failed or was refused.
    pub fn is_broken(&self) -> bool {
        self.state().broken
    }

    /// Settles one admitted write.
    fn settle(&self, known: bool) {
        let mut s = self.state();
        debug_assert!(s.in_flight > 0, "settling a write that is not in flight");
        s.in_flight = s.in_flight.saturating_sub(1);
        if !known {
            s.broken = true;
        }
    }
}

/// A write of the connection queued for the proposer: counted by its [`WriteOrder`] until
/// dropped (admitted, refused, or dropped with its proposal).
#[derive(Debug)]
pub struct Queued(Arc<WriteOrder>);

impl Queued {
    /// The connection's order.
    pub fn order(&self) -> &Arc<WriteOrder> {
        &self.0
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        let mut s = self.0.state();
        debug_assert!(s.queued > 0, "a queued write was not counted");
        s.queued = s.queued.saturating_sub(1);
    }
}

/// An admitted write whose outcome is not known yet. Settle it with [`InFlight::settle`];
/// dropped unsettled (its proposal was dropped at shutdown), it counts as failed.
#[derive(Debug)]
pub struct InFlight {
    /// `None` once settled.
    order: Option<Arc<WriteOrder>>,
}

impl InFlight {
    /// The write's outcome is known and final (`true`: applied, or refused with an error its
    /// client is told, and the connection goes on), or it failed and its connection closes
    /// (`false`: the outcome is unknown, or the client is told nothing of it).
    pub fn settle(mut self, known: bool) {
        if let Some(order) = self.order.take() {
            order.settle(known);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(order) = self.order.take() {
            order.settle(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Route = Route {
        leader: 1,
        term: 5,
        link: 1,
    };
    const B: Route = Route {
        leader: 2,
        term: 6,
        link: 1,
    };

    #[test]
    fn writes_to_one_leader_are_admitted_however_many_are_in_flight() {
        let order = WriteOrder::new();
        let first = order.admit(A).expect("first write");
        let second = order.admit(A).expect("second write, same leader");
        first.settle(true);
        second.settle(true);
        assert!(!order.is_broken());
    }

    #[test]
    fn a_write_for_another_leader_waits_for_nothing_once_the_earlier_ones_are_applied() {
        let order = WriteOrder::new();
        order.admit(A).expect("first write").settle(true);
        order
            .admit(B)
            .expect("nothing in flight: the new leader may take it")
            .settle(true);
        assert!(!order.is_broken());
    }

    #[test]
    fn a_write_for_another_leader_is_refused_while_earlier_ones_are_in_flight() {
        let order = WriteOrder::new();
        let first = order.admit(A).expect("first write");
        assert_eq!(
            order.admit(B).expect_err("W1 still with the old leader"),
            OutOfOrder::LeaderChanged { was: A, now: B }
        );
        // Even once W1 turns out applied, the refused W2 broke the order for good.
        first.settle(true);
        assert_eq!(order.admit(B).unwrap_err(), OutOfOrder::EarlierFailed);
        assert_eq!(order.admit(A).unwrap_err(), OutOfOrder::EarlierFailed);
    }

    #[test]
    fn the_same_leader_in_a_later_term_or_on_another_link_is_another_route() {
        // Re-elected, or reached over a new stream after the connection broke.
        for other in [Route { term: 7, ..A }, Route { link: 2, ..A }] {
            let order = WriteOrder::new();
            let _first = order.admit(A).expect("first write");
            assert_eq!(
                order.admit(other).unwrap_err(),
                OutOfOrder::LeaderChanged { was: A, now: other }
            );
        }
    }

    #[test]
    fn a_write_admitted_alone_has_nothing_in_flight_beside_it() {
        let order = WriteOrder::new();
        order.admit_alone().expect("nothing in flight").settle(true);
        let alone = order.admit_alone().expect("nothing in flight again");
        assert_eq!(order.admit(A).unwrap_err(), OutOfOrder::NotAlone);
        alone.settle(true);
        assert!(order.is_broken(), "the refusal broke the order");

        let order = WriteOrder::new();
        let _first = order.admit(A).expect("first write");
        assert_eq!(order.admit_alone().unwrap_err(), OutOfOrder::NotAlone);

        // A write handed to the proposer but not yet admitted counts too.
        let order = WriteOrder::new();
        let queued = order.queue();
        assert_eq!(order.admit_alone().unwrap_err(), OutOfOrder::NotAlone);
        drop(queued);
        assert!(order.is_broken());
        let order = WriteOrder::new();
        drop(order.queue());
        order
            .admit_alone()
            .expect("nothing queued any more")
            .settle(true);

        // Once it is settled, writes go on as usual.
        let order = WriteOrder::new();
        order.admit_alone().expect("alone").settle(true);
        order.admit(A).expect("after it").settle(true);
        assert!(!order.is_broken());
    }

    #[test]
    fn after_a_failed_write_every_later_one_is_refused() {
        let order = WriteOrder::new();
        let first = order.admit(A).expect("first write");
        let second = order.admit(A).expect("second write");
        first.settle(false);
        assert_eq!(order.admit(A).unwrap_err(), OutOfOrder::EarlierFailed);
        second.settle(true);
        assert!(order.is_broken());
    }

    #[test]
    fn a_write_dropped_unsettled_counts_as_failed() {
        let order = WriteOrder::new();
        drop(order.admit(A).expect("first write"));
        assert_eq!(order.admit(A).unwrap_err(), OutOfOrder::EarlierFailed);
    }

    #[test]
    fn a_write_refused_before_admission_breaks_the_order() {
        let order = WriteOrder::new();
        order.break_off();
        assert_eq!(order.admit(A).unwrap_err(), OutOfOrder::EarlierFailed);
    }
}
