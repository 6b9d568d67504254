//! Random concurrent histories that are linearizable by construction: each client runs its
//! operations one after another; every operation gets a random latency and a linearization point
//! strictly inside its interval; the model is run sequentially in linearization-point order to
//! compute the results. Some operations are then recorded as unknown (they still took effect) or
//! added as failed/unknown operations that never took effect.

#![allow(dead_code)] // each test binary uses a part of it

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use synod_faults::history::{Operation, Outcome};
use synod_faults::model::{
    MultiModel, MultiOp, MultiRet, RegisterModel, RegisterOp, RegisterRet, Tree, TxnOp, Value,
    Znode, ZnodeOp,
};

/// Shape of a generated history.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Concurrent clients.
    pub clients: usize,
    /// Operations in all.
    pub ops: usize,
    /// Znodes touched.
    pub keys: usize,
    /// Probability that an operation that took effect is recorded as unknown.
    pub unknown: f64,
    /// Probability that an operation did not take effect (recorded failed or unknown).
    pub phantom: f64,
    /// Maximum latency of an operation, in time units (concurrency grows with it).
    pub max_latency: u64,
}

/// A planned operation: who, what, when.
struct Planned<O> {
    process: u64,
    op: O,
    call: u64,
    ret: u64,
    lin: u64,
    /// 0: applied and acknowledged, 1: applied but unknown, 2: not applied, failed, 3: not
    /// applied, unknown.
    fate: u8,
}

/// Plans `shape.ops` operations over the clients (times scaled so calls/returns are multiples of
/// 3 and linearization points are not: a point is strictly inside its interval).
fn plan<O>(
    rng: &mut StdRng,
    shape: &Shape,
    mut gen: impl FnMut(&mut StdRng, u64) -> O,
) -> Vec<Planned<O>> {
    let mut clock = vec![0u64; shape.clients];
    let mut planned = Vec::with_capacity(shape.ops);
    for _ in 0..shape.ops {
        let c = rng.random_range(0..shape.clients);
        let start = clock[c] + rng.random_range(0..3);
        let latency = rng.random_range(1..=shape.max_latency);
        let (call, ret) = (3 * start, 3 * (start + latency));
        let lin = call + 1 + rng.random_range(0..3 * latency - 1);
        clock[c] = start + latency;
        let fate = if rng.random_bool(shape.phantom) {
            if rng.random_bool(0.5) {
                2
            } else {
                3
            }
        } else if rng.random_bool(shape.unknown) {
            1
        } else {
            0
        };
        planned.push(Planned {
            process: c as u64,
            op: gen(rng, c as u64),
            call,
            ret,
            lin,
            fate,
        });
    }
    planned
}

/// Runs `apply` over the planned ops in linearization order and records the history.
fn record<O: Clone, R: Clone, S>(
    mut planned: Vec<Planned<O>>,
    init: S,
    mut apply: impl FnMut(&S, &O) -> (S, R),
) -> Vec<Operation<O, R>> {
    planned.sort_by_key(|p| p.lin);
    let mut state = init;
    let mut ops = Vec::with_capacity(planned.len());
    for p in planned {
        let outcome = if p.fate >= 2 {
            if p.fate == 2 {
                Outcome::Failed
            } else {
                Outcome::Unknown
            }
        } else {
            let (next, ret) = apply(&state, &p.op);
            state = next;
            if p.fate == 1 {
                Outcome::Unknown
            } else {
                Outcome::Ok(ret)
            }
        };
        ops.push((p.call, p.ret, p.process, p.op, outcome));
    }
    ops.sort_by_key(|o| o.0);
    ops.into_iter()
        .enumerate()
        .map(|(id, (call, ret, process, op, outcome))| Operation {
            id,
            process,
            op,
            call,
            ret: Some(ret),
            outcome,
            call_at: std::time::Duration::from_micros(call),
            ret_at: Some(std::time::Duration::from_micros(ret)),
        })
        .collect()
}

/// A random register history over `shape.keys` znodes named `/k0`, `/k1`, ...
pub fn register_history(seed: u64, shape: &Shape) -> Vec<Operation<ZnodeOp, RegisterRet>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0u64;
    let planned = plan(&mut rng, shape, |rng, client| {
        n += 1;
        let value = Value::from(format!("c{client}-{n}"));
        let op = match rng.random_range(0..100) {
            0..40 => RegisterOp::Read,
            40..60 => RegisterOp::Write(value),
            60..82 => RegisterOp::CasWrite {
                value,
                expected_version: rng.random_range(0..6),
            },
            82..92 => RegisterOp::Create(value),
            _ => RegisterOp::Delete {
                expected_version: if rng.random_bool(0.5) {
                    -1
                } else {
                    rng.random_range(0..6)
                },
            },
        };
        ZnodeOp::new(format!("/k{}", rng.random_range(0..shape.keys)), op)
    });
    // Each key is its own register: keep one state per key.
    let mut states: std::collections::HashMap<String, Option<Znode>> = Default::default();
    record(planned, (), |_, op: &ZnodeOp| {
        let state = states.entry(op.path.clone()).or_default();
        let (next, ret) = RegisterModel::apply(state, &op.op);
        *state = next;
        ((), ret)
    })
}

/// The keys of generated multi histories.
pub const MULTI_KEYS: [&str; 3] = ["/m/a", "/m/b", "/m/c"];

/// The initial tree of generated multi histories: every key at version 0.
pub fn multi_initial() -> Tree {
    MULTI_KEYS
        .iter()
        .map(|k| {
            (
                k.to_string(),
                Znode {
                    value: Value::from("init"),
                    version: 0,
                },
            )
        })
        .collect()
}

/// A random multi history over [`MULTI_KEYS`].
pub fn multi_history(seed: u64, shape: &Shape) -> Vec<Operation<MultiOp, MultiRet>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0u64;
    let planned = plan(&mut rng, shape, |rng, client| {
        if rng.random_bool(0.4) {
            return MultiOp::Read(MULTI_KEYS.iter().map(|k| k.to_string()).collect());
        }
        let len = rng.random_range(1..=3);
        MultiOp::Txn(
            (0..len)
                .map(|_| {
                    n += 1;
                    let path = MULTI_KEYS[rng.random_range(0..MULTI_KEYS.len())].to_string();
                    let value = Value::from(format!("c{client}-{n}"));
                    let version = if rng.random_bool(0.5) {
                        -1
                    } else {
                        rng.random_range(0..4)
                    };
                    match rng.random_range(0..10) {
                        0..5 => TxnOp::Set {
                            path,
                            value,
                            version,
                        },
                        5..7 => TxnOp::Check { path, version },
                        7..9 => TxnOp::Create { path, value },
                        _ => TxnOp::Delete { path, version },
                    }
                })
                .collect(),
        )
    });
    record(planned, multi_initial(), MultiModel::apply)
}

/// Replaces one acknowledged result by a different, plausible one; `None` if there is none to
/// change. Returns the id of the mutated operation.
pub fn mutate_register(
    rng: &mut StdRng,
    ops: &mut [Operation<ZnodeOp, RegisterRet>],
) -> Option<usize> {
    let acked: Vec<usize> = ops.iter().filter(|o| o.is_ok()).map(|o| o.id).collect();
    if acked.is_empty() {
        return None;
    }
    let id = acked[rng.random_range(0..acked.len())];
    let Outcome::Ok(ret) = &ops[id].outcome else {
        return None;
    };
    let changed = match ret {
        RegisterRet::Value { value, version } => {
            if rng.random_bool(0.5) {
                RegisterRet::Value {
                    value: value.clone(),
                    version: version + 1,
                }
            } else {
                RegisterRet::Value {
                    value: Value::from("never written"),
                    version: *version,
                }
            }
        }
        RegisterRet::Written { version } => RegisterRet::Written {
            version: version + 1,
        },
        RegisterRet::Created => RegisterRet::NodeExists,
        RegisterRet::NodeExists => RegisterRet::Created,
        RegisterRet::Deleted => RegisterRet::NoNode,
        RegisterRet::NoNode => match ops[id].op.op {
            RegisterOp::Read => RegisterRet::Value {
                value: Value::from("ghost"),
                version: 0,
            },
            _ => RegisterRet::BadVersion,
        },
        RegisterRet::BadVersion => RegisterRet::Written { version: 0 },
    };
    ops[id].outcome = Outcome::Ok(changed);
    Some(id)
}
