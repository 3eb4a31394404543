//! Resources as frameworks see them: the reservation fields follow each
//! framework's RESERVATION_REFINEMENT capability, `allocation_info` its
//! MULTI_ROLE capability, and what frameworks send back is accepted in
//! whichever form they use.

use std::time::SystemTime;

use km_mesos::v1::scheduler::{self as sched, call, event};
use km_mesos::{agent, v1};
use tokio::time::Instant;

use super::*;

fn master(now: Instant) -> Master {
    Master::new(super::scenarios::config(), now, SystemTime::UNIX_EPOCH)
}

fn framework_info(role: &str, caps: &[v1::framework_info::capability::Type]) -> v1::FrameworkInfo {
    let capabilities = caps
        .iter()
        .map(|t| {
            let mut c = v1::framework_info::Capability::default();
            c.set_type(*t);
            c
        })
        .collect();
    let multi = caps.contains(&v1::framework_info::capability::Type::MultiRole);
    v1::FrameworkInfo {
        user: "u".into(),
        name: "f".into(),
        role: (!multi).then(|| role.to_owned()),
        roles: if multi { vec![role.to_owned()] } else { vec![] },
        capabilities,
        ..Default::default()
    }
}

/// One agent with unreserved cpus and memory reserved for `prod`, one framework
/// in role `prod`; returns the framework's first offer.
fn offer_to(
    m: &mut Master,
    caps: &[v1::framework_info::capability::Type],
    now: Instant,
) -> (String, v1::Offer) {
    let wall = SystemTime::UNIX_EPOCH;
    let info = v1::AgentInfo {
        hostname: "h1".into(),
        resources: km_mesos::flags::parse_resources("cpus:2;mem(prod):256").unwrap(),
        ..Default::default()
    };
    m.subscribe_agent(
        1,
        agent::call::Subscribe { agent_info: info, ..Default::default() },
        now,
        wall,
    )
    .unwrap();
    let subscribe =
        call::Subscribe { framework_info: framework_info("prod", caps), ..Default::default() };
    m.subscribe_framework(2, "s".into(), subscribe, None, now, wall);
    m.allocate(now);
    let offers: Vec<v1::Offer> = m
        .take_outbox()
        .into_iter()
        .filter_map(|o| match o {
            Out::Scheduler(2, e) if e.r#type() == event::Type::Offers => e.offers,
            _ => None,
        })
        .flat_map(|o| o.offers)
        .collect();
    assert_eq!(offers.len(), 1, "one agent, one offer");
    let fw = m.frameworks.keys().next().unwrap().clone();
    (fw, offers.into_iter().next().unwrap())
}

/// ACCEPTs `offer` with one task using `resources`; returns the messages of
/// the status updates the framework got.
fn launch(
    m: &mut Master,
    fw: &str,
    offer: &v1::Offer,
    resources: Vec<v1::Resource>,
) -> Vec<String> {
    let task = v1::TaskInfo {
        name: "t".into(),
        task_id: v1::TaskId { value: "t1".into() },
        agent_id: offer.agent_id.clone(),
        resources,
        command: Some(v1::CommandInfo::default()),
        ..Default::default()
    };
    let mut operation = v1::offer::Operation {
        launch: Some(v1::offer::operation::Launch { task_infos: vec![task] }),
        ..Default::default()
    };
    operation.set_type(v1::offer::operation::Type::Launch);
    let mut c = sched::Call {
        framework_id: Some(v1::FrameworkId { value: fw.to_owned() }),
        accept: Some(call::Accept {
            offer_ids: vec![offer.id.clone()],
            operations: vec![operation],
            filters: None,
        }),
        ..Default::default()
    };
    c.set_type(call::Type::Accept);
    m.scheduler_call(c, Instant::now(), SystemTime::UNIX_EPOCH).expect("ACCEPT is taken");
    m.take_outbox()
        .into_iter()
        .filter_map(|o| match o {
            Out::Scheduler(_, e) => e.update.and_then(|u| u.status.message),
            _ => None,
        })
        .collect()
}

fn find<'a>(offer: &'a v1::Offer, name: &str) -> &'a v1::Resource {
    offer.resources.iter().find(|r| r.name == name).unwrap()
}

#[test]
fn old_frameworks_get_the_role_field() {
    let now = Instant::now();
    let mut m = master(now);
    let (_, offer) = offer_to(&mut m, &[], now);
    let (cpus, mem) = (find(&offer, "cpus"), find(&offer, "mem"));
    assert_eq!((cpus.role.as_deref(), mem.role.as_deref()), (Some("*"), Some("prod")));
    assert!(cpus.reservations.is_empty() && mem.reservations.is_empty());
    assert!(offer.resources.iter().all(|r| r.allocation_info.is_none()));
}

#[test]
fn refinement_and_multi_role_frameworks_get_stacks_and_allocation_info() {
    use v1::framework_info::capability::Type;
    let now = Instant::now();
    let mut m = master(now);
    let (fw, offer) = offer_to(&mut m, &[Type::MultiRole, Type::ReservationRefinement], now);
    let (cpus, mem) = (find(&offer, "cpus"), find(&offer, "mem"));
    assert_eq!((cpus.role.as_deref(), mem.role.as_deref()), (None, None));
    assert!(cpus.reservations.is_empty());
    assert_eq!(mem.reservations[0].role.as_deref(), Some("prod"));
    assert!(
        offer
            .resources
            .iter()
            .all(|r| r.allocation_info.as_ref().and_then(|a| a.role.as_deref()) == Some("prod"))
    );

    // The framework launches with the offered resources as they came,
    // allocation_info included; the master takes them.
    let errors = launch(&mut m, &fw, &offer, offer.resources.clone());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(m.tasks.contains_key(&(fw, "t1".to_owned())));
    let agent = m.agents.values().next().unwrap();
    assert_eq!(agent.used, agent.total, "the whole agent is in use");
}

#[test]
fn asking_more_than_offered_names_both_sides() {
    let now = Instant::now();
    let mut m = master(now);
    let (fw, offer) = offer_to(&mut m, &[], now);
    let messages = launch(&mut m, &fw, &offer, km_mesos::flags::parse_resources("cpus:3").unwrap());
    assert_eq!(
        messages,
        ["Task uses more resources cpus(*):3 than available cpus(*):2; mem(prod):256"]
    );
}
