//! The analysis half of synod's fault-injection suite: a thread-safe recorder of operation
//! histories ([`history`]), a Wing–Gong/Lowe linearizability checker ([`checker`]) generic over a
//! sequential [`model::Model`] with ZooKeeper register and multi-transaction models ([`model`]),
//! and pure checks over recorded data — lost writes, sequential names, lock holders, watch
//! delivery, ephemeral lifetimes — plus the per-scenario summary row ([`checks`]).
//!
//! Nothing here talks to a cluster: the driver that starts `synod` processes, injects faults and
//! runs clients records what it saw with [`history::History`] and hands the recorded data to these
//! functions. Everything is deterministic and bounded: the checker takes a [`checker::Budget`] and
//! answers "gave up" rather than run without end.
//!
//! What a driver records for each check:
//!
//! - linearizability: one [`history::History`] of [`model::ZnodeOp`] per register workload (many
//!   znodes, few unknown writes per znode — see the limits in [`checker`]) and one of
//!   [`model::MultiOp`] per multi workload (a handful of keys, a few hundred ops). Map ZooKeeper
//!   answers that are results of the model (NoNode, NodeExists, BadVersion, a failed multi's
//!   per-op codes) to `Outcome::Ok(..)`; connection loss or timeout after sending to
//!   `Outcome::Unknown`; an error before sending to `Outcome::Failed`;
//! - [`checks::no_lost_writes`]: every acknowledged create/setData with the zxid and version of
//!   its reply, the deletes, and a final read of every written path after healing;
//! - [`checks::sequential_names_unique_increasing`]: acknowledged sequential creates with their
//!   returned names and logical call/return stamps;
//! - [`checks::lock_never_two_holders`]: one interval per lock tenure, from acquire completed to
//!   release sent (or session loss noticed), with its fencing token;
//! - [`checks::watch_events_exactly_once_in_order`]: the events a persistent recursive watcher
//!   received, in order, and the acknowledged changes (path, zxid, kind) made while it watched;
//! - [`checks::ephemeral_lifetime`]: session lives, ephemerals, and timed reads of their paths
//!   with the `ephemeralOwner` seen.
//!
//! Typical use by a driver:
//!
//! ```
//! use synod_faults::history::{History, Outcome};
//! use synod_faults::model::{RegisterModel, RegisterOp, RegisterRet, Value, ZnodeOp};
//! use synod_faults::checker::{check, Budget};
//!
//! let history = History::new();
//! let id = history.invoke(1, ZnodeOp::new("/k", RegisterOp::Create(Value::from("a"))));
//! history.complete(id, Outcome::Ok(RegisterRet::Created)).expect("invoked above");
//! let id = history.invoke(2, ZnodeOp::new("/k", RegisterOp::Read));
//! history.complete(id, Outcome::Ok(RegisterRet::Value { value: Value::from("a"), version: 0 }))
//!     .expect("invoked above");
//! let report = check(&RegisterModel, &history.operations(), &Budget::default());
//! assert!(report.is_linearizable(), "{report}");
//! ```

pub mod checker;
pub mod checks;
pub mod error;
pub mod history;
pub mod model;

pub use error::FaultsError;
