//! Hand-written histories, linearizable and not, through the WGL checker with the ZooKeeper
//! register and multi models.

use synod_faults::checker::{check, Budget, Verdict};
use synod_faults::history::{History, OpId, Outcome};
use synod_faults::model::{
    MultiModel, MultiOp, MultiRet, RegisterModel, RegisterOp, RegisterRet, Tree, TxnError, TxnOp,
    TxnOpRet, Value, Znode, ZnodeOp,
};

type Reg = History<ZnodeOp, RegisterRet>;

fn v(s: &str) -> Value {
    Value::from(s)
}

fn read(path: &str) -> ZnodeOp {
    ZnodeOp::new(path, RegisterOp::Read)
}

fn write(path: &str, value: &str) -> ZnodeOp {
    ZnodeOp::new(path, RegisterOp::Write(v(value)))
}

fn cas(path: &str, value: &str, expected_version: i32) -> ZnodeOp {
    ZnodeOp::new(
        path,
        RegisterOp::CasWrite {
            value: v(value),
            expected_version,
        },
    )
}

fn create(path: &str, value: &str) -> ZnodeOp {
    ZnodeOp::new(path, RegisterOp::Create(v(value)))
}

fn got(value: &str, version: i32) -> Outcome<RegisterRet> {
    Outcome::Ok(RegisterRet::Value {
        value: v(value),
        version,
    })
}

fn written(version: i32) -> Outcome<RegisterRet> {
    Outcome::Ok(RegisterRet::Written { version })
}

fn done<O: Clone, R: Clone>(h: &History<O, R>, id: OpId, outcome: Outcome<R>) {
    h.complete(id, outcome)
        .expect("operation invoked by the test");
}

/// Runs one operation to completion before anything else happens.
fn seq(h: &Reg, p: u64, op: ZnodeOp, outcome: Outcome<RegisterRet>) -> OpId {
    let id = h.invoke(p, op);
    done(h, id, outcome);
    id
}

fn verdict(h: &Reg) -> Verdict {
    let report = check(&RegisterModel, &h.operations(), &Budget::default());
    println!("{report}");
    report.verdict()
}

/// A history starting with `/k` created as "a".
fn created() -> Reg {
    let h = History::new();
    seq(&h, 0, create("/k", "a"), Outcome::Ok(RegisterRet::Created));
    h
}

#[test]
fn sequential_history_is_linearizable() {
    let h = created();
    seq(&h, 1, read("/k"), got("a", 0));
    seq(&h, 2, write("/k", "b"), written(1));
    seq(
        &h,
        1,
        cas("/k", "c", 0),
        Outcome::Ok(RegisterRet::BadVersion),
    );
    seq(&h, 1, cas("/k", "c", 1), written(2));
    seq(&h, 2, read("/k"), got("c", 2));
    seq(
        &h,
        2,
        create("/k", "x"),
        Outcome::Ok(RegisterRet::NodeExists),
    );
    seq(
        &h,
        1,
        ZnodeOp::new(
            "/k",
            RegisterOp::Delete {
                expected_version: 1,
            },
        ),
        Outcome::Ok(RegisterRet::BadVersion),
    );
    seq(
        &h,
        1,
        ZnodeOp::new(
            "/k",
            RegisterOp::Delete {
                expected_version: 2,
            },
        ),
        Outcome::Ok(RegisterRet::Deleted),
    );
    seq(&h, 2, read("/k"), Outcome::Ok(RegisterRet::NoNode));
    seq(&h, 2, write("/k", "z"), Outcome::Ok(RegisterRet::NoNode));
    seq(&h, 2, create("/k", "d"), Outcome::Ok(RegisterRet::Created));
    seq(&h, 1, read("/k"), got("d", 0));
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn stale_read_is_caught_with_a_short_counter_example() {
    let h = created();
    seq(&h, 1, write("/k", "b"), written(1));
    let stale = seq(&h, 2, read("/k"), got("a", 0));
    // Plenty of fine operations afterwards: the counter-example must not include them.
    for i in 0..40 {
        seq(&h, 1, write("/k", &format!("w{i}")), written(2 + i));
    }
    let report = check(&RegisterModel, &h.operations(), &Budget::default());
    println!("{report}");
    assert_eq!(report.verdict(), Verdict::NotLinearizable);
    let ce = &report.counter_examples[0];
    assert!(ce.minimized);
    assert_eq!(ce.prefix_ops, 3, "create, write, stale read");
    assert_eq!(ce.linearized.len(), 2);
    assert_eq!(
        ce.state,
        Some(Znode {
            value: v("b"),
            version: 1
        })
    );
    assert_eq!(ce.unplaced.len(), 1);
    assert_eq!(ce.unplaced[0].0.id, stale);
    let text = report.to_string();
    assert!(text.contains(&format!("#{stale} p2")), "{text}");
    assert!(text.contains("shortest failing prefix"), "{text}");
}

#[test]
fn lost_write_is_caught() {
    let h = created();
    seq(&h, 1, write("/k", "b"), written(1));
    seq(&h, 2, write("/k", "c"), written(2));
    // Reads as if the write of "c" never happened.
    seq(&h, 3, read("/k"), got("b", 1));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn two_writes_acknowledged_with_the_same_version_are_caught() {
    let h = created();
    let a = h.invoke(1, write("/k", "b"));
    let b = h.invoke(2, write("/k", "c"));
    done(&h, a, written(1));
    done(&h, b, written(1));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn read_of_a_value_never_written_is_caught() {
    let h = created();
    let w = h.invoke(1, write("/k", "b"));
    let r = h.invoke(2, read("/k"));
    done(&h, r, got("zzz", 1));
    done(&h, w, written(1));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn two_cas_winners_at_the_same_version_are_caught() {
    let h = created();
    let a = h.invoke(1, cas("/k", "x", 0));
    let b = h.invoke(2, cas("/k", "y", 0));
    done(&h, a, written(1));
    done(&h, b, written(1));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);

    // One winner, one BadVersion: fine, whichever order.
    let h = created();
    let a = h.invoke(1, cas("/k", "x", 0));
    let b = h.invoke(2, cas("/k", "y", 0));
    done(&h, a, Outcome::Ok(RegisterRet::BadVersion));
    done(&h, b, written(1));
    seq(&h, 3, read("/k"), got("y", 1));
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn overlapping_operations_may_take_effect_in_any_order() {
    // Writes of b and c overlap; their versions say c went first; reads overlapping both see
    // every legal intermediate state.
    let h = created();
    let wb = h.invoke(1, write("/k", "b"));
    let wc = h.invoke(2, write("/k", "c"));
    let r1 = h.invoke(3, read("/k"));
    let r2 = h.invoke(4, read("/k"));
    let r3 = h.invoke(5, read("/k"));
    done(&h, r1, got("a", 0));
    done(&h, wb, written(2));
    done(&h, r2, got("c", 1));
    done(&h, r3, got("b", 2));
    done(&h, wc, written(1));
    seq(&h, 3, read("/k"), got("b", 2));
    assert_eq!(verdict(&h), Verdict::Linearizable);

    // The same, but a read that finished before the writes started saw one of them.
    let h = created();
    seq(&h, 3, read("/k"), got("c", 1));
    let wb = h.invoke(1, write("/k", "b"));
    let wc = h.invoke(2, write("/k", "c"));
    done(&h, wb, written(2));
    done(&h, wc, written(1));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);

    // Reads that go back: r2 starts after r1 ended, r1 saw b@2, r2 sees c@1.
    let h = created();
    let wb = h.invoke(1, write("/k", "b"));
    let wc = h.invoke(2, write("/k", "c"));
    seq(&h, 3, read("/k"), got("b", 2));
    seq(&h, 4, read("/k"), got("c", 1));
    done(&h, wb, written(2));
    done(&h, wc, written(1));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn unknown_write_may_or_may_not_take_effect_but_only_once_and_after_its_call() {
    // Took effect, observed late.
    let h = created();
    let w = h.invoke(1, write("/k", "b"));
    done(&h, w, Outcome::Unknown);
    seq(&h, 2, read("/k"), got("a", 0));
    seq(&h, 2, read("/k"), got("b", 1));
    seq(&h, 2, write("/k", "c"), written(2));
    assert_eq!(verdict(&h), Verdict::Linearizable);

    // Never took effect.
    let h = created();
    let w = h.invoke(1, write("/k", "b"));
    done(&h, w, Outcome::Unknown);
    seq(&h, 2, read("/k"), got("a", 0));
    seq(&h, 2, write("/k", "c"), written(1));
    assert_eq!(verdict(&h), Verdict::Linearizable);

    // Still pending at the end (never completed): same as unknown.
    let h = created();
    h.invoke(1, write("/k", "b"));
    seq(&h, 2, read("/k"), got("b", 1));
    assert_eq!(verdict(&h), Verdict::Linearizable);

    // Took effect, then the register went back to the old value: not linearizable.
    let h = created();
    let w = h.invoke(1, write("/k", "b"));
    done(&h, w, Outcome::Unknown);
    seq(&h, 2, read("/k"), got("b", 1));
    seq(&h, 2, read("/k"), got("a", 0));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);

    // Observed before it was even invoked.
    let h = created();
    seq(&h, 2, read("/k"), got("b", 1));
    let w = h.invoke(1, write("/k", "b"));
    done(&h, w, Outcome::Unknown);
    assert_eq!(verdict(&h), Verdict::NotLinearizable);

    // A failed write definitely did not happen.
    let h = created();
    let w = h.invoke(1, write("/k", "b"));
    done(&h, w, Outcome::Failed);
    seq(&h, 2, read("/k"), got("b", 1));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn keys_are_checked_independently_and_the_failing_key_is_named() {
    let h: Reg = History::new();
    for k in ["/a", "/b", "/c"] {
        seq(&h, 0, create(k, "0"), Outcome::Ok(RegisterRet::Created));
    }
    seq(&h, 1, write("/a", "1"), written(1));
    seq(&h, 1, write("/b", "1"), written(1));
    seq(&h, 2, read("/a"), got("1", 1));
    seq(&h, 2, read("/b"), got("0", 0)); // stale
    seq(&h, 2, read("/c"), got("0", 0));
    let report = check(&RegisterModel, &h.operations(), &Budget::default());
    println!("{report}");
    assert_eq!(report.partitions, 3);
    assert_eq!(report.counter_examples.len(), 1);
    assert!(report.counter_examples[0]
        .unplaced
        .iter()
        .all(|(o, _)| o.op.path == "/b"));
}

#[test]
fn exhausted_budget_gives_up_instead_of_answering() {
    let h = created();
    let ids: Vec<_> = (0..6)
        .map(|i| h.invoke(i, write("/k", &format!("w{i}"))))
        .collect();
    for (n, id) in ids.into_iter().enumerate() {
        done(&h, id, written(6 - n as i32));
    }
    let tiny = Budget {
        max_steps: 5,
        ..Budget::default()
    };
    let report = check(&RegisterModel, &h.operations(), &tiny);
    println!("{report}");
    assert_eq!(report.verdict(), Verdict::GaveUp);
    assert_eq!(report.undecided.len(), 1);
    // With a real budget the same history is fine (the writes went in reverse order).
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

// --------------------------------------------------------------------------------------------
// Multi
// --------------------------------------------------------------------------------------------

type Multi = History<MultiOp, MultiRet>;

fn tree(entries: &[(&str, &str, i32)]) -> Tree {
    entries
        .iter()
        .map(|(p, val, version)| {
            (
                p.to_string(),
                Znode {
                    value: v(val),
                    version: *version,
                },
            )
        })
        .collect()
}

fn set(path: &str, value: &str, version: i32) -> TxnOp {
    TxnOp::Set {
        path: path.into(),
        value: v(value),
        version,
    }
}

fn read_ab() -> MultiOp {
    MultiOp::Read(vec!["/a".into(), "/b".into()])
}

fn seen(a: (&str, i32), b: (&str, i32)) -> Outcome<MultiRet> {
    Outcome::Ok(MultiRet::Read(vec![
        Some(Znode {
            value: v(a.0),
            version: a.1,
        }),
        Some(Znode {
            value: v(b.0),
            version: b.1,
        }),
    ]))
}

fn multi_verdict(h: &Multi) -> Verdict {
    let model = MultiModel::new(tree(&[("/a", "0", 0), ("/b", "0", 0)]));
    let report = check(&model, &h.operations(), &Budget::default());
    println!("{report}");
    report.verdict()
}

fn transfer() -> MultiOp {
    MultiOp::Txn(vec![set("/a", "1", 0), set("/b", "1", 0)])
}

fn transfer_ok() -> Outcome<MultiRet> {
    Outcome::Ok(MultiRet::Txn(vec![
        TxnOpRet::Set { version: 1 },
        TxnOpRet::Set { version: 1 },
    ]))
}

#[test]
fn atomic_multi_seen_whole_by_concurrent_and_later_reads() {
    let h: Multi = History::new();
    let t = h.invoke(1, transfer());
    let r1 = h.invoke(2, read_ab());
    let r2 = h.invoke(3, read_ab());
    done(&h, r1, seen(("0", 0), ("0", 0)));
    done(&h, r2, seen(("1", 1), ("1", 1)));
    done(&h, t, transfer_ok());
    let r = h.invoke(2, read_ab());
    done(&h, r, seen(("1", 1), ("1", 1)));
    assert_eq!(multi_verdict(&h), Verdict::Linearizable);
}

#[test]
fn half_applied_multi_is_caught() {
    // After the multi is acknowledged, a read sees only half of it (atomicity).
    let h: Multi = History::new();
    let t = h.invoke(1, transfer());
    done(&h, t, transfer_ok());
    let r = h.invoke(2, read_ab());
    done(&h, r, seen(("1", 1), ("0", 0)));
    assert_eq!(multi_verdict(&h), Verdict::NotLinearizable);

    // A read concurrent with the multi sees half of it (isolation).
    let h: Multi = History::new();
    let t = h.invoke(1, transfer());
    let r = h.invoke(2, read_ab());
    done(&h, r, seen(("0", 0), ("1", 1)));
    done(&h, t, transfer_ok());
    assert_eq!(multi_verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn failed_multi_must_change_nothing() {
    let op = MultiOp::Txn(vec![
        set("/a", "2", 0),
        TxnOp::Check {
            path: "/b".into(),
            version: 5,
        },
        set("/b", "2", -1),
    ]);
    let failed = Outcome::Ok(MultiRet::Txn(vec![
        TxnOpRet::RolledBack,
        TxnOpRet::Error(TxnError::BadVersion),
        TxnOpRet::Skipped,
    ]));
    let h: Multi = History::new();
    let t = h.invoke(1, op.clone());
    done(&h, t, failed.clone());
    let r = h.invoke(2, read_ab());
    done(&h, r, seen(("0", 0), ("0", 0)));
    assert_eq!(multi_verdict(&h), Verdict::Linearizable);

    let h: Multi = History::new();
    let t = h.invoke(1, op);
    done(&h, t, failed);
    let r = h.invoke(2, read_ab());
    done(&h, r, seen(("2", 1), ("0", 0)));
    assert_eq!(multi_verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn multi_with_wrong_per_op_results_is_caught() {
    let h: Multi = History::new();
    let t = h.invoke(1, transfer());
    done(
        &h,
        t,
        Outcome::Ok(MultiRet::Txn(vec![
            TxnOpRet::Set { version: 1 },
            TxnOpRet::Set { version: 2 },
        ])),
    );
    assert_eq!(multi_verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn unknown_multi_applies_whole_or_not_at_all() {
    let h: Multi = History::new();
    let t = h.invoke(1, transfer());
    done(&h, t, Outcome::Unknown);
    let r = h.invoke(2, read_ab());
    done(&h, r, seen(("1", 1), ("1", 1)));
    assert_eq!(multi_verdict(&h), Verdict::Linearizable);

    let h: Multi = History::new();
    let t = h.invoke(1, transfer());
    done(&h, t, Outcome::Unknown);
    let r = h.invoke(2, read_ab());
    done(&h, r, seen(("1", 1), ("0", 0)));
    assert_eq!(multi_verdict(&h), Verdict::NotLinearizable);
}
