//! Property tests of the allocator through the master core: random sequences
//! of registrations, allocations, declines, revives and launches, with the
//! invariants checked after every step.

use std::time::{Duration, SystemTime};

use km_mesos::v1::scheduler::{self as sched, call};
use km_mesos::{agent, v1};
use proptest::prelude::*;
use tokio::time::Instant;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    AddAgent {
        cpus: u8,
        ports: u8,
    },
    AddFramework,
    Allocate,
    Decline {
        offer: usize,
        refuse: u8,
    },
    Revive {
        framework: usize,
    },
    /// Launch a task using `cpus_tenths` and `ports` ports of an offer.
    Launch {
        offer: usize,
        cpus_tenths: u8,
        ports: u8,
    },
    Advance {
        secs: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..8, 0u8..6).prop_map(|(cpus, ports)| Op::AddAgent { cpus, ports }),
        Just(Op::AddFramework),
        Just(Op::Allocate),
        Just(Op::Allocate),
        (any::<usize>(), 0u8..4).prop_map(|(offer, refuse)| Op::Decline { offer, refuse }),
        any::<usize>().prop_map(|framework| Op::Revive { framework }),
        (any::<usize>(), 1u8..20, 0u8..3).prop_map(|(offer, cpus_tenths, ports)| Op::Launch {
            offer,
            cpus_tenths,
            ports
        }),
        (1u8..4).prop_map(|secs| Op::Advance { secs }),
    ]
}

/// A master whose allocator draws from `seed`, so a failing case replays exactly.
fn master(now: Instant, seed: u64) -> Master {
    Master::new(Config { seed, ..super::scenarios::config() }, now, SystemTime::UNIX_EPOCH)
}

fn typed(ty: call::Type, framework: &str, fill: impl FnOnce(&mut sched::Call)) -> sched::Call {
    let mut c = sched::Call {
        framework_id: Some(v1::FrameworkId { value: framework.into() }),
        ..Default::default()
    };
    c.set_type(ty);
    fill(&mut c);
    c
}

/// Every agent: offered + used fits in its total, the offered bookkeeping
/// equals the outstanding offers, and no two offers hold the same port.
fn check_no_overcommit(m: &Master) -> Result<(), TestCaseError> {
    for (id, a) in &m.agents {
        let mut sum = Resources::default();
        for o in m.offers.values().filter(|o| &o.agent_id == id) {
            for r in o.resources.iter() {
                if let km_resources::Value::Ranges(ports) = &r.value {
                    for b in sum.iter() {
                        if let km_resources::Value::Ranges(other) = &b.value {
                            prop_assert!(!ports.intersects(other), "port offered twice on {}", id);
                        }
                    }
                }
            }
            sum.add(&o.resources);
        }
        prop_assert!(
            sum.contains(&a.offered) && a.offered.contains(&sum),
            "offered bookkeeping of {} drifted",
            id
        );
        let mut committed = a.used.clone();
        committed.add(&a.offered);
        prop_assert!(a.total.contains(&committed), "agent {} over-committed", id);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn allocation_never_overcommits_and_filters_hold(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let mut m = master(now, seed);
        let mut conn = 0;
        let mut frameworks: Vec<String> = Vec::new();
        for op in ops {
            match op {
                Op::AddAgent { cpus, ports } => {
                    conn += 1;
                    let spec = format!("cpus:{cpus};mem:1024;ports:[31000-{}]", 31000 + u32::from(ports));
                    let info = v1::AgentInfo {
                        hostname: format!("h{conn}"),
                        resources: km_mesos::flags::parse_resources(&spec).unwrap(),
                        ..Default::default()
                    };
                    let subscribe = agent::call::Subscribe { agent_info: info, ..Default::default() };
                    m.subscribe_agent(conn, subscribe, now, wall).unwrap();
                }
                Op::AddFramework => {
                    conn += 1;
                    let info = v1::FrameworkInfo { user: "u".into(), name: "f".into(), ..Default::default() };
                    let subscribe = call::Subscribe { framework_info: info, ..Default::default() };
                    m.subscribe_framework(conn, format!("s{conn}"), subscribe, None, now, wall);
                    frameworks = m.frameworks.keys().cloned().collect();
                }
                Op::Allocate => m.allocate(now),
                Op::Decline { offer, refuse } => {
                    let ids: Vec<String> = m.offers.keys().cloned().collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let id = ids[offer % ids.len()].clone();
                    let (fw, agent_id) = (m.offers[&id].framework_id.clone(), m.offers[&id].agent_id.clone());
                    let c = typed(call::Type::Decline, &fw, |c| {
                        c.decline = Some(call::Decline {
                            offer_ids: vec![v1::OfferId { value: id.clone() }],
                            filters: Some(v1::Filters { refuse_seconds: Some(f64::from(refuse)) }),
                        })
                    });
                    m.scheduler_call(c, now, wall).expect("the call is taken");
                    prop_assert!(!m.offers.contains_key(&id));
                    if refuse > 0 {
                        // Nothing changed on the agent: the filter must hold.
                        m.allocate(now);
                        prop_assert!(
                            !m.offers.values().any(|o| o.framework_id == fw && o.agent_id == agent_id),
                            "declined agent re-offered to the same framework within refuse_seconds"
                        );
                    }
                }
                Op::Revive { framework } => {
                    if frameworks.is_empty() {
                        continue;
                    }
                    let fw = frameworks[framework % frameworks.len()].clone();
                    let c = typed(call::Type::Revive, &fw, |c| c.revive = Some(call::Revive { roles: vec![] }));
                    m.scheduler_call(c, now, wall).expect("the call is taken");
                    prop_assert!(m.frameworks[&fw].filters.is_empty(), "revive must clear the filters");
                }
                Op::Launch { offer, cpus_tenths, ports } => {
                    let ids: Vec<String> = m.offers.keys().cloned().collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let id = ids[offer % ids.len()].clone();
                    let (fw, agent_id) = (m.offers[&id].framework_id.clone(), m.offers[&id].agent_id.clone());
                    let mut spec = format!("cpus:{}.{};mem:16", cpus_tenths / 10, cpus_tenths % 10);
                    if ports > 0 {
                        spec.push_str(&format!(";ports:[31000-{}]", 31000 + u32::from(ports) - 1));
                    }
                    let task = v1::TaskInfo {
                        name: "t".into(),
                        task_id: v1::TaskId { value: format!("t{conn}-{id}") },
                        agent_id: v1::AgentId { value: agent_id },
                        resources: km_mesos::flags::parse_resources(&spec).unwrap(),
                        command: Some(v1::CommandInfo::default()),
                        ..Default::default()
                    };
                    let mut operation = v1::offer::Operation {
                        launch: Some(v1::offer::operation::Launch { task_infos: vec![task] }),
                        ..Default::default()
                    };
                    operation.set_type(v1::offer::operation::Type::Launch);
                    let c = typed(call::Type::Accept, &fw, |c| {
                        c.accept = Some(call::Accept {
                            offer_ids: vec![v1::OfferId { value: id }],
                            operations: vec![operation],
                            filters: Some(v1::Filters { refuse_seconds: Some(0.0) }),
                        })
                    });
                    m.scheduler_call(c, now, wall).expect("the call is taken");
                }
                Op::Advance { secs } => now += Duration::from_secs(u64::from(secs)),
            }
            m.take_outbox();
            check_no_overcommit(&m)?;
        }
    }
}
