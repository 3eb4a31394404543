//! Property tests over the simulation: random interleavings of pod creations and deletions,
//! offers, time, agent losses, task failures, scheduler restarts and re-subscriptions.

use std::time::Duration;

use proptest::prelude::*;

use crate::sim::Sim;

#[derive(Clone, Debug)]
enum Op {
    Create(u32),
    Delete(usize),
    Allocate,
    Advance(u64),
    LoseAgent(usize),
    FailTask(usize),
    Restart,
    Resubscribe,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u32..=4).prop_map(|c| Op::Create(c * 100)),
        2 => any::<usize>().prop_map(Op::Delete),
        5 => Just(Op::Allocate),
        5 => (1u64..3000).prop_map(Op::Advance),
        1 => any::<usize>().prop_map(Op::LoseAgent),
        1 => any::<usize>().prop_map(Op::FailTask),
        1 => Just(Op::Restart),
        1 => Just(Op::Resubscribe),
    ]
}

fn run(ops: &[Op]) -> Sim {
    let mut sim = Sim::new(4);
    let mut created = 0;
    for op in ops {
        match op {
            // At most 30 pods of ≤ 0.4 cpu: everything fits 4 agents of 4 cpus.
            Op::Create(c) if created < 30 => {
                created += 1;
                sim.create_pod(*c);
            }
            Op::Create(_) => {}
            Op::Delete(n) => sim.delete_pod(*n),
            Op::Allocate => sim.allocate(),
            Op::Advance(ms) => sim.advance(Duration::from_millis(*ms)),
            Op::LoseAgent(n) => sim.lose_agent(*n),
            Op::FailTask(n) => sim.fail_task(*n),
            Op::Restart => sim.start_core(),
            Op::Resubscribe => sim.resubscribe(),
        }
    }
    sim
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Never two live tasks for one pod, never an offer used twice, never beyond an offer,
    /// never a running pod killed; and once things calm down every pod that fits is bound,
    /// no task runs without its pod, and no bound pod lacks its task.
    #[test]
    fn the_core_keeps_its_promises(ops in proptest::collection::vec(op(), 1..120)) {
        let mut sim = run(&ops);
        sim.calm(150);
        prop_assert!(sim.violations.is_empty(), "violations: {:#?}", sim.violations);
        prop_assert!(sim.unbound_pods().is_empty(), "never placed: {:?}", sim.unbound_pods());
        prop_assert!(sim.orphan_tasks().is_empty(), "tasks without pods: {:?}", sim.orphan_tasks());
        prop_assert!(sim.bound_without_task().is_empty(), "bound pods without a task: {:?}", sim.bound_without_task());
    }
}

#[test]
fn a_burst_is_placed_in_few_offers() {
    let mut sim = Sim::new(10);
    for _ in 0..200 {
        sim.create_pod(100);
    }
    sim.calm(5);
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    assert!(sim.unbound_pods().is_empty());
    assert_eq!(sim.launches, 200);
}
