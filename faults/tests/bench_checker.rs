//! How fast the checker is on a suite-sized history: 10,000 register operations over 50 znodes
//! from 8 concurrent clients (with some unknown and failed operations), and the same history with
//! one result corrupted.

mod common;

use std::time::{Duration, Instant};

use common::{mutate_register, register_history, Shape};
use rand::rngs::StdRng;
use rand::SeedableRng;
use synod_faults::checker::{check, Budget, Verdict};
use synod_faults::model::RegisterModel;

/// Generous for an unoptimized build on a loaded 2-core machine; the measured time is printed.
const LIMIT: Duration = Duration::from_secs(3);

fn shape() -> Shape {
    Shape {
        clients: 8,
        ops: 10_000,
        keys: 50,
        unknown: 0.02,
        phantom: 0.02,
        max_latency: 6,
    }
}

#[test]
fn ten_thousand_register_ops_check_fast() {
    let ops = register_history(42, &shape());
    let started = Instant::now();
    let report = check(&RegisterModel, &ops, &Budget::default());
    let took = started.elapsed();
    println!(
        "10k ops / 50 keys / 8 clients: {:?} in {took:.3?} ({} steps, {} parts)",
        report.verdict(),
        report.steps,
        report.partitions
    );
    assert_eq!(report.verdict(), Verdict::Linearizable, "{report}");
    assert_eq!(report.partitions, 50);
    assert!(took < LIMIT, "checking took {took:?}");
}

#[test]
fn ten_thousand_register_ops_with_one_bad_result_fail_fast() {
    let mut ops = register_history(43, &shape());
    let mut rng = StdRng::seed_from_u64(5);
    let id = mutate_register(&mut rng, &mut ops).expect("the history has acknowledged ops");
    let started = Instant::now();
    let report = check(&RegisterModel, &ops, &Budget::default());
    let took = started.elapsed();
    println!(
        "10k ops with op #{id} corrupted: {:?} in {took:.3?} ({} steps)\n{report}",
        report.verdict(),
        report.steps
    );
    assert_eq!(report.verdict(), Verdict::NotLinearizable);
    let ce = &report.counter_examples[0];
    assert!(ce.minimized);
    assert!(
        ce.unplaced.iter().any(|(o, _)| o.id == id) || ce.linearized.iter().any(|s| s.op.id == id),
        "the corrupted op is part of the counter-example"
    );
    assert!(took < LIMIT, "checking took {took:?}");
}

/// One znode hammered by 8 clients: decided quickly with few unknown writes, linearizable or
/// not; with many unknown writes a corrupted history explodes the search, and the checker must
/// give up within its budget rather than hang or eat the machine's memory.
#[test]
fn one_hot_key_with_unknown_writes() {
    for (unknown, decided) in [(0.0, true), (0.02, true), (0.05, false)] {
        let shape = Shape {
            clients: 8,
            ops: 2_000,
            keys: 1,
            unknown,
            phantom: unknown,
            max_latency: 6,
        };
        let mut history = register_history(44, &shape);
        let started = Instant::now();
        let report = check(&RegisterModel, &history, &Budget::default());
        let took = started.elapsed();
        println!(
            "hot key: 2000 ops, 8 clients, {:.0}% unknown + {:.0}% phantom: {:?} in {took:.3?} ({} steps)",
            unknown * 100.0,
            unknown * 100.0,
            report.verdict(),
            report.steps
        );
        assert_eq!(report.verdict(), Verdict::Linearizable, "{report}");
        assert!(took < LIMIT, "checking took {took:?}");

        let mut rng = StdRng::seed_from_u64(6);
        mutate_register(&mut rng, &mut history).expect("the history has acknowledged ops");
        let budget = Budget {
            timeout: Duration::from_secs(2),
            max_memo_bytes: 64 << 20,
            ..Budget::default()
        };
        let started = Instant::now();
        let report = check(&RegisterModel, &history, &budget);
        let took = started.elapsed();
        println!(
            "  ... one result corrupted: {:?} in {took:.3?} ({} steps)",
            report.verdict(),
            report.steps
        );
        let expected = if decided {
            Verdict::NotLinearizable
        } else {
            Verdict::GaveUp
        };
        assert_eq!(report.verdict(), expected, "{report}");
        assert!(
            took < budget.timeout + Duration::from_secs(1),
            "overran its budget: {took:?}"
        );
    }
}
