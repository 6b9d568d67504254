//! How much work the checker does on a suite-sized history: 10,000 register operations over 50
//! znodes from 8 concurrent clients (with some unknown and failed operations), and the same
//! history with one result corrupted. The work is counted in search steps, which do not depend
//! on the machine; the time each check took is printed, not asserted (this machine is noisy).

mod common;

use std::time::{Duration, Instant};

use common::{mutate_register, register_history, Shape};
use rand::rngs::StdRng;
use rand::SeedableRng;
use synod_faults::checker::{check, Budget, Verdict};
use synod_faults::model::RegisterModel;

/// Search steps per operation a decided check may take: the histories here take 1 to 40, a
/// search that lost its pruning would take orders of magnitude more.
const MAX_STEPS_PER_OP: u64 = 100;

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
    assert!(
        report.steps <= 10_000 * MAX_STEPS_PER_OP,
        "{} steps",
        report.steps
    );
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
    assert!(
        report.steps <= 10_000 * MAX_STEPS_PER_OP,
        "{} steps",
        report.steps
    );
}

/// One znode hammered by 8 clients: decided quickly with few unknown writes, linearizable or
/// not; with many unknown writes a corrupted history explodes the search, and the checker must
/// give up within its budget (here one of steps, which does not depend on the machine) rather
/// than hang or eat the machine's memory.
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
        assert!(
            report.steps <= 2_000 * MAX_STEPS_PER_OP,
            "{} steps",
            report.steps
        );

        let mut rng = StdRng::seed_from_u64(6);
        mutate_register(&mut rng, &mut history).expect("the history has acknowledged ops");
        // The corrupted histories took 0.43 and 0.81 million steps to refute; the last one is
        // not decided in 1.7 million.
        let budget = Budget {
            max_steps: 1_500_000,
            // Only a guard against a hang: the step budget is what ends the search.
            timeout: Duration::from_secs(120),
            max_memo_bytes: 64 << 20,
        };
        let started = Instant::now();
        let report = check(&RegisterModel, &history, &budget);
        let took = started.elapsed();
        println!(
            "  ... one result corrupted: {:?} in {took:.3?} ({} steps)",
            report.verdict(),
            report.steps
        );
        if decided {
            assert_eq!(report.verdict(), Verdict::NotLinearizable, "{report}");
            assert!(report.steps < budget.max_steps, "{} steps", report.steps);
        } else {
            // Given up where the step budget ends (not earlier, on the memo's memory, nor later).
            assert_eq!(report.verdict(), Verdict::GaveUp, "{report}");
            assert_eq!(report.steps, budget.max_steps);
        }
    }
}
