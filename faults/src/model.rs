//! Sequential specifications for the linearizability checker: the [`Model`] trait and the two
//! ZooKeeper models the fault suite checks — a versioned register per znode ([`RegisterModel`])
//! and atomic multi-znode transactions with multi-reads over a small key set ([`MultiModel`]).
//!
//! A model says, for a state and an operation, which states may follow if the operation returned
//! a given result ([`Model::step`]) or if its result is unknown ([`Model::step_unknown`]). States
//! must be cheap to clone, and hashable, because the checker memoizes (linearized set, state)
//! pairs. Both ZooKeeper models are deterministic: they compute the result the service must give
//! and compare it with the observed one.
//!
//! Versions follow ZooKeeper: a znode has data version 0 when created and every `setData`
//! increments it; a version argument of -1 means "any version".

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;

use crate::history::Operation;

/// A sequential specification of an object, as the checker needs it.
pub trait Model {
    /// An operation as invoked (arguments included).
    type Op: Clone + fmt::Debug;
    /// What an operation returned.
    type Ret: Clone + fmt::Debug;
    /// The object's state; hashed and compared for memoization.
    type State: Clone + Eq + Hash + fmt::Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `op` is applied to `state` and returns `ret`, or `None` if `op` cannot
    /// return `ret` in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op, ret: &Self::Ret) -> Option<Self::State>;

    /// Every state that may follow `op` applied to `state` when its result was never observed
    /// (one element for a deterministic model). "Never took effect" needs no entry here: the
    /// checker may always leave an unknown operation out.
    fn step_unknown(&self, state: &Self::State, op: &Self::Op) -> Vec<Self::State>;

    /// Whether `op` never changes the state; such operations are dropped when their result is
    /// unknown (they constrain nothing), which keeps the search small.
    fn is_read_only(&self, _op: &Self::Op) -> bool {
        false
    }

    /// Splits a history into independent sub-histories (P-compositionality: the history is
    /// linearizable iff each part is). Returns groups of indexes into `ops`. The default is one
    /// group holding everything.
    fn partition(&self, ops: &[Operation<Self::Op, Self::Ret>]) -> Vec<Vec<usize>> {
        vec![(0..ops.len()).collect()]
    }
}

/// Znode data: bytes, printed as a (lossy) string so counter-examples are readable.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Value(pub Vec<u8>);

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value(s.as_bytes().to_vec())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value(s.into_bytes())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value(v)
    }
}

/// A znode's data and data version.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Znode {
    /// Its data.
    pub value: Value,
    /// Its data version (`Stat.version`).
    pub version: i32,
}

impl fmt::Debug for Znode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@v{}", self.value, self.version)
    }
}

// ---------------------------------------------------------------------------------------------
// Register per znode
// ---------------------------------------------------------------------------------------------

/// A single-znode operation of the register model.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    /// `getData`.
    Read,
    /// `setData(value, -1)`.
    Write(Value),
    /// `setData(value, expected_version)`.
    CasWrite {
        /// The new data.
        value: Value,
        /// The version the znode must have.
        expected_version: i32,
    },
    /// `create(value)` (persistent, not sequential).
    Create(Value),
    /// `delete(expected_version)`, -1 for any version.
    Delete {
        /// The version the znode must have, or -1.
        expected_version: i32,
    },
}

impl fmt::Debug for RegisterOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterOp::Read => write!(f, "read"),
            RegisterOp::Write(v) => write!(f, "write {v:?}"),
            RegisterOp::CasWrite {
                value,
                expected_version,
            } => {
                write!(f, "cas {value:?} if v{expected_version}")
            }
            RegisterOp::Create(v) => write!(f, "create {v:?}"),
            RegisterOp::Delete { expected_version } => write!(f, "delete if v{expected_version}"),
        }
    }
}

/// A register operation on a named znode; the register model partitions histories by `path`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ZnodeOp {
    /// The znode.
    pub path: String,
    /// What is done to it.
    pub op: RegisterOp,
}

impl ZnodeOp {
    /// `op` on `path`.
    pub fn new(path: impl Into<String>, op: RegisterOp) -> Self {
        Self {
            path: path.into(),
            op,
        }
    }
}

impl fmt::Debug for ZnodeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.path, self.op)
    }
}

/// What a register operation returned (ZooKeeper's answer, errors included).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum RegisterRet {
    /// `getData` answered this data and `Stat.version`.
    Value {
        /// The data read.
        value: Value,
        /// Its data version.
        version: i32,
    },
    /// `setData` succeeded; the new `Stat.version`.
    Written {
        /// The version after the write.
        version: i32,
    },
    /// `create` succeeded.
    Created,
    /// `delete` succeeded.
    Deleted,
    /// `NoNode` error.
    NoNode,
    /// `NodeExists` error.
    NodeExists,
    /// `BadVersion` error.
    BadVersion,
}

impl fmt::Debug for RegisterRet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterRet::Value { value, version } => write!(f, "{value:?}@v{version}"),
            RegisterRet::Written { version } => write!(f, "ok v{version}"),
            RegisterRet::Created => write!(f, "created"),
            RegisterRet::Deleted => write!(f, "deleted"),
            RegisterRet::NoNode => write!(f, "NoNode"),
            RegisterRet::NodeExists => write!(f, "NodeExists"),
            RegisterRet::BadVersion => write!(f, "BadVersion"),
        }
    }
}

/// One znode as a versioned register, ZooKeeper semantics; histories are checked per path. The
/// znode does not exist initially: record the setup `create` in the history.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegisterModel;

impl RegisterModel {
    /// Applies `op` to `state`: the next state and the answer ZooKeeper must give.
    pub fn apply(state: &Option<Znode>, op: &RegisterOp) -> (Option<Znode>, RegisterRet) {
        match (op, state) {
            (RegisterOp::Read, Some(z)) => (
                state.clone(),
                RegisterRet::Value {
                    value: z.value.clone(),
                    version: z.version,
                },
            ),
            (RegisterOp::Create(v), None) => (
                Some(Znode {
                    value: v.clone(),
                    version: 0,
                }),
                RegisterRet::Created,
            ),
            (RegisterOp::Create(_), Some(_)) => (state.clone(), RegisterRet::NodeExists),
            (_, None) => (None, RegisterRet::NoNode),
            (RegisterOp::Write(v), Some(z)) => {
                let version = z.version.wrapping_add(1);
                (
                    Some(Znode {
                        value: v.clone(),
                        version,
                    }),
                    RegisterRet::Written { version },
                )
            }
            (
                RegisterOp::CasWrite {
                    value,
                    expected_version,
                },
                Some(z),
            ) => {
                if *expected_version == z.version {
                    let version = z.version.wrapping_add(1);
                    (
                        Some(Znode {
                            value: value.clone(),
                            version,
                        }),
                        RegisterRet::Written { version },
                    )
                } else {
                    (state.clone(), RegisterRet::BadVersion)
                }
            }
            (RegisterOp::Delete { expected_version }, Some(z)) => {
                if *expected_version == -1 || *expected_version == z.version {
                    (None, RegisterRet::Deleted)
                } else {
                    (state.clone(), RegisterRet::BadVersion)
                }
            }
        }
    }
}

impl Model for RegisterModel {
    type Op = ZnodeOp;
    type Ret = RegisterRet;
    type State = Option<Znode>;

    fn init(&self) -> Self::State {
        None
    }

    fn step(&self, state: &Self::State, op: &ZnodeOp, ret: &RegisterRet) -> Option<Self::State> {
        let (next, expected) = Self::apply(state, &op.op);
        (expected == *ret).then_some(next)
    }

    fn step_unknown(&self, state: &Self::State, op: &ZnodeOp) -> Vec<Self::State> {
        vec![Self::apply(state, &op.op).0]
    }

    fn is_read_only(&self, op: &ZnodeOp) -> bool {
        matches!(op.op, RegisterOp::Read)
    }

    fn partition(&self, ops: &[Operation<ZnodeOp, RegisterRet>]) -> Vec<Vec<usize>> {
        let mut by_path: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, o) in ops.iter().enumerate() {
            by_path.entry(o.op.path.as_str()).or_default().push(i);
        }
        by_path.into_values().collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Multi-znode transactions
// ---------------------------------------------------------------------------------------------

/// One operation inside a `multi`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum TxnOp {
    /// `check(path, version)`.
    Check {
        /// The znode.
        path: String,
        /// The version it must have (-1: it must exist).
        version: i32,
    },
    /// `setData(path, value, version)`.
    Set {
        /// The znode.
        path: String,
        /// The new data.
        value: Value,
        /// The version it must have, or -1.
        version: i32,
    },
    /// `create(path, value)` (persistent, not sequential).
    Create {
        /// The znode.
        path: String,
        /// Its data.
        value: Value,
    },
    /// `delete(path, version)`.
    Delete {
        /// The znode.
        path: String,
        /// The version it must have, or -1.
        version: i32,
    },
}

impl fmt::Debug for TxnOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnOp::Check { path, version } => write!(f, "check {path} v{version}"),
            TxnOp::Set {
                path,
                value,
                version,
            } => write!(f, "set {path}={value:?} if v{version}"),
            TxnOp::Create { path, value } => write!(f, "create {path}={value:?}"),
            TxnOp::Delete { path, version } => write!(f, "delete {path} if v{version}"),
        }
    }
}

/// Why an operation inside a failed `multi` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnError {
    /// `NoNode`.
    NoNode,
    /// `NodeExists`.
    NodeExists,
    /// `BadVersion`.
    BadVersion,
}

/// The per-operation result of a `multi`, as ZooKeeper reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TxnOpRet {
    /// A `check` passed.
    Checked,
    /// A `setData` succeeded; the new version.
    Set {
        /// The version after the write.
        version: i32,
    },
    /// A `create` succeeded.
    Created,
    /// A `delete` succeeded.
    Deleted,
    /// The multi failed later; this op would have succeeded (ZooKeeper's error result 0).
    RolledBack,
    /// This op made the multi fail.
    Error(TxnError),
    /// The multi failed earlier; this op was not tried (`RuntimeInconsistency`).
    Skipped,
}

/// An operation of the multi model.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum MultiOp {
    /// `multi(ops)`: all or nothing. (A plain `setData` is a one-op transaction.)
    Txn(Vec<TxnOp>),
    /// A multi-read of these znodes (ZooKeeper's read-only multi of `getData`), returning each
    /// one's data and version. (A plain `getData` is a one-path read.)
    Read(Vec<String>),
}

impl fmt::Debug for MultiOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MultiOp::Txn(ops) => write!(f, "multi{ops:?}"),
            MultiOp::Read(paths) => write!(f, "read{paths:?}"),
        }
    }
}

/// What a multi-model operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MultiRet {
    /// The per-op results of a `multi` (committed iff none is an error).
    Txn(Vec<TxnOpRet>),
    /// Each path's data and version, `None` for NoNode, in the order asked.
    Read(Vec<Option<Znode>>),
}

/// The state of the multi model: the znodes that exist.
pub type Tree = BTreeMap<String, Znode>;

/// A small fixed set of sibling leaf znodes changed by atomic `multi` transactions and read by
/// multi-reads: checks that a multi applies all or nothing (atomicity) and that no read sees part
/// of one (isolation). The keys are assumed to be leaves whose parent exists (no NoChildren or
/// NotEmpty cases). The whole history is checked as one (keep it short: a few hundred ops).
#[derive(Debug, Clone, Default)]
pub struct MultiModel {
    /// The znodes that exist before the history starts.
    pub initial: Tree,
}

impl MultiModel {
    /// A model starting from `initial`.
    pub fn new(initial: Tree) -> Self {
        Self { initial }
    }

    /// Applies one txn op to `tree`; `Err` if it fails.
    fn apply_one(tree: &mut Tree, op: &TxnOp) -> Result<TxnOpRet, TxnError> {
        let version_ok = |z: &Znode, v: i32| v == -1 || v == z.version;
        match op {
            TxnOp::Check { path, version } => match tree.get(path) {
                None => Err(TxnError::NoNode),
                Some(z) if version_ok(z, *version) => Ok(TxnOpRet::Checked),
                Some(_) => Err(TxnError::BadVersion),
            },
            TxnOp::Set {
                path,
                value,
                version,
            } => match tree.get_mut(path) {
                None => Err(TxnError::NoNode),
                Some(z) if version_ok(z, *version) => {
                    z.version = z.version.wrapping_add(1);
                    z.value = value.clone();
                    Ok(TxnOpRet::Set { version: z.version })
                }
                Some(_) => Err(TxnError::BadVersion),
            },
            TxnOp::Create { path, value } => {
                if tree.contains_key(path) {
                    Err(TxnError::NodeExists)
                } else {
                    tree.insert(
                        path.clone(),
                        Znode {
                            value: value.clone(),
                            version: 0,
                        },
                    );
                    Ok(TxnOpRet::Created)
                }
            }
            TxnOp::Delete { path, version } => match tree.get(path) {
                None => Err(TxnError::NoNode),
                Some(z) if version_ok(z, *version) => {
                    tree.remove(path);
                    Ok(TxnOpRet::Deleted)
                }
                Some(_) => Err(TxnError::BadVersion),
            },
        }
    }

    /// Applies `op` to `tree`: the next tree and the answer ZooKeeper must give.
    pub fn apply(tree: &Tree, op: &MultiOp) -> (Tree, MultiRet) {
        match op {
            MultiOp::Read(paths) => (
                tree.clone(),
                MultiRet::Read(paths.iter().map(|p| tree.get(p).cloned()).collect()),
            ),
            MultiOp::Txn(ops) => {
                let mut scratch = tree.clone();
                let mut results = Vec::with_capacity(ops.len());
                for (i, op) in ops.iter().enumerate() {
                    match Self::apply_one(&mut scratch, op) {
                        Ok(r) => results.push(r),
                        Err(e) => {
                            let mut failed = vec![TxnOpRet::RolledBack; i];
                            failed.push(TxnOpRet::Error(e));
                            failed.resize(ops.len(), TxnOpRet::Skipped);
                            return (tree.clone(), MultiRet::Txn(failed));
                        }
                    }
                }
                (scratch, MultiRet::Txn(results))
            }
        }
    }
}

impl Model for MultiModel {
    type Op = MultiOp;
    type Ret = MultiRet;
    type State = Tree;

    fn init(&self) -> Tree {
        self.initial.clone()
    }

    fn step(&self, state: &Tree, op: &MultiOp, ret: &MultiRet) -> Option<Tree> {
        let (next, expected) = Self::apply(state, op);
        (expected == *ret).then_some(next)
    }

    fn step_unknown(&self, state: &Tree, op: &MultiOp) -> Vec<Tree> {
        vec![Self::apply(state, op).0]
    }

    fn is_read_only(&self, op: &MultiOp) -> bool {
        match op {
            MultiOp::Read(_) => true,
            MultiOp::Txn(ops) => ops.iter().all(|o| matches!(o, TxnOp::Check { .. })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(v: &str, version: i32) -> Option<Znode> {
        Some(Znode {
            value: v.into(),
            version,
        })
    }

    #[test]
    fn register_follows_zookeeper_versions() {
        let s = None;
        assert_eq!(
            RegisterModel::apply(&s, &RegisterOp::Read).1,
            RegisterRet::NoNode
        );
        assert_eq!(
            RegisterModel::apply(&s, &RegisterOp::Write("x".into())).1,
            RegisterRet::NoNode
        );
        let (s, r) = RegisterModel::apply(&s, &RegisterOp::Create("a".into()));
        assert_eq!((s.clone(), r), (z("a", 0), RegisterRet::Created));
        assert_eq!(
            RegisterModel::apply(&s, &RegisterOp::Create("b".into())),
            (z("a", 0), RegisterRet::NodeExists)
        );
        let (s, r) = RegisterModel::apply(&s, &RegisterOp::Write("b".into()));
        assert_eq!(
            (s.clone(), r),
            (z("b", 1), RegisterRet::Written { version: 1 })
        );
        let cas = |v: &str, e| RegisterOp::CasWrite {
            value: v.into(),
            expected_version: e,
        };
        assert_eq!(
            RegisterModel::apply(&s, &cas("c", 0)),
            (z("b", 1), RegisterRet::BadVersion)
        );
        let (s, r) = RegisterModel::apply(&s, &cas("c", 1));
        assert_eq!(
            (s.clone(), r),
            (z("c", 2), RegisterRet::Written { version: 2 })
        );
        assert_eq!(
            RegisterModel::apply(
                &s,
                &RegisterOp::Delete {
                    expected_version: 1
                }
            ),
            (z("c", 2), RegisterRet::BadVersion)
        );
        assert_eq!(
            RegisterModel::apply(
                &s,
                &RegisterOp::Delete {
                    expected_version: 2
                }
            ),
            (None, RegisterRet::Deleted)
        );
        assert_eq!(
            RegisterModel::apply(
                &s,
                &RegisterOp::Delete {
                    expected_version: -1
                }
            ),
            (None, RegisterRet::Deleted)
        );
        assert_eq!(
            RegisterModel::apply(
                &None,
                &RegisterOp::Delete {
                    expected_version: -1
                }
            ),
            (None, RegisterRet::NoNode)
        );
    }

    #[test]
    fn failed_multi_reports_like_zookeeper_and_changes_nothing() {
        let mut t = Tree::new();
        t.insert(
            "/a".into(),
            Znode {
                value: "1".into(),
                version: 3,
            },
        );
        let op = MultiOp::Txn(vec![
            TxnOp::Set {
                path: "/a".into(),
                value: "2".into(),
                version: 3,
            },
            TxnOp::Check {
                path: "/b".into(),
                version: 0,
            },
            TxnOp::Create {
                path: "/c".into(),
                value: "x".into(),
            },
        ]);
        let (next, ret) = MultiModel::apply(&t, &op);
        assert_eq!(next, t);
        assert_eq!(
            ret,
            MultiRet::Txn(vec![
                TxnOpRet::RolledBack,
                TxnOpRet::Error(TxnError::NoNode),
                TxnOpRet::Skipped
            ])
        );
    }

    #[test]
    fn committed_multi_applies_ops_in_order() {
        let op = MultiOp::Txn(vec![
            TxnOp::Create {
                path: "/a".into(),
                value: "1".into(),
            },
            TxnOp::Set {
                path: "/a".into(),
                value: "2".into(),
                version: 0,
            },
            TxnOp::Check {
                path: "/a".into(),
                version: 1,
            },
            TxnOp::Create {
                path: "/b".into(),
                value: "x".into(),
            },
            TxnOp::Delete {
                path: "/b".into(),
                version: -1,
            },
        ]);
        let (next, ret) = MultiModel::apply(&Tree::new(), &op);
        assert_eq!(
            ret,
            MultiRet::Txn(vec![
                TxnOpRet::Created,
                TxnOpRet::Set { version: 1 },
                TxnOpRet::Checked,
                TxnOpRet::Created,
                TxnOpRet::Deleted
            ])
        );
        assert_eq!(next.len(), 1);
        assert_eq!(next.get("/a"), z("2", 1).as_ref());
        let (_, read) = MultiModel::apply(&next, &MultiOp::Read(vec!["/a".into(), "/b".into()]));
        assert_eq!(read, MultiRet::Read(vec![z("2", 1), None]));
    }
}
