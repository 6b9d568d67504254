//! Generated histories: random sequential executions of the models with random concurrency
//! around them (linearizable by construction) must pass; changing one acknowledged result must
//! make most of them fail.

mod common;

use common::{multi_history, multi_initial, mutate_register, register_history, Shape};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use synod_faults::checker::{check, Budget, Verdict};
use synod_faults::history::Outcome;
use synod_faults::model::{MultiModel, MultiRet, RegisterModel, TxnError, TxnOpRet, Znode};

fn shape() -> impl Strategy<Value = Shape> {
    (
        1usize..6,
        1usize..120,
        1usize..4,
        0.0..0.2f64,
        0.0..0.1f64,
        1u64..8,
    )
        .prop_map(
            |(clients, ops, keys, unknown, phantom, max_latency)| Shape {
                clients,
                ops,
                keys,
                unknown,
                phantom,
                max_latency,
            },
        )
}

proptest! {
    // Failures print the seed and shape, which reproduce the history exactly; nothing is
    // persisted (integration tests have no source file proptest could write beside).
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_register_histories_are_linearizable(seed in any::<u64>(), shape in shape()) {
        let ops = register_history(seed, &shape);
        let report = check(&RegisterModel, &ops, &Budget::default());
        prop_assert_eq!(report.verdict(), Verdict::Linearizable, "{}", report);
    }

    #[test]
    fn generated_multi_histories_are_linearizable(seed in any::<u64>(), shape in shape()) {
        let shape = Shape { ops: shape.ops.min(60), ..shape };
        let ops = multi_history(seed, &shape);
        let report = check(&MultiModel::new(multi_initial()), &ops, &Budget::default());
        prop_assert_eq!(report.verdict(), Verdict::Linearizable, "{}", report);
    }
}

/// Fraction of mutated histories the checker rejects.
fn register_mutation_rejection_rate(seed: u64, runs: usize) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let shape = Shape {
        clients: 4,
        ops: 60,
        keys: 2,
        unknown: 0.05,
        phantom: 0.05,
        max_latency: 4,
    };
    let (mut mutated, mut rejected) = (0, 0);
    for _ in 0..runs {
        let mut ops = register_history(rng.random(), &shape);
        if mutate_register(&mut rng, &mut ops).is_none() {
            continue;
        }
        mutated += 1;
        let report = check(&RegisterModel, &ops, &Budget::default());
        assert_ne!(report.verdict(), Verdict::GaveUp, "{report}");
        if report.verdict() == Verdict::NotLinearizable {
            rejected += 1;
        }
    }
    rejected as f64 / mutated as f64
}

#[test]
fn mutating_one_register_result_is_mostly_caught() {
    let rate = register_mutation_rejection_rate(7, 300);
    println!("register mutations rejected: {:.1}%", rate * 100.0);
    assert!(
        rate > 0.9,
        "only {:.1}% of mutated histories rejected",
        rate * 100.0
    );
}

#[test]
fn mutating_one_multi_result_is_mostly_caught() {
    let mut rng = StdRng::seed_from_u64(11);
    let shape = Shape {
        clients: 3,
        ops: 40,
        keys: 3,
        unknown: 0.05,
        phantom: 0.05,
        max_latency: 4,
    };
    let model = MultiModel::new(multi_initial());
    let (mut mutated, mut rejected) = (0, 0);
    for _ in 0..200 {
        let mut ops = multi_history(rng.random(), &shape);
        let acked: Vec<usize> = ops.iter().filter(|o| o.is_ok()).map(|o| o.id).collect();
        if acked.is_empty() {
            continue;
        }
        let id = acked[rng.random_range(0..acked.len())];
        let Outcome::Ok(ret) = &mut ops[id].outcome else {
            unreachable!("acked")
        };
        match ret {
            // A read that misses one key's latest write, or a transaction reported as its
            // opposite (committed <-> failed).
            MultiRet::Read(nodes) => match nodes.iter_mut().flatten().next() {
                Some(z) => z.version += 1,
                None => {
                    nodes[0] = Some(Znode {
                        value: "ghost".into(),
                        version: 0,
                    })
                }
            },
            MultiRet::Txn(results) => {
                let failed = results.iter().any(|r| matches!(r, TxnOpRet::Error(_)));
                if failed {
                    results.iter_mut().for_each(|r| *r = TxnOpRet::Checked);
                } else {
                    results[0] = TxnOpRet::Error(TxnError::BadVersion);
                }
            }
        }
        mutated += 1;
        let report = check(&model, &ops, &Budget::default());
        if report.verdict() == Verdict::NotLinearizable {
            rejected += 1;
        }
    }
    let rate = f64::from(rejected) / f64::from(mutated);
    println!(
        "multi mutations rejected: {:.1}% of {mutated}",
        rate * 100.0
    );
    assert!(
        rate > 0.9,
        "only {:.1}% of mutated multi histories rejected",
        rate * 100.0
    );
}
