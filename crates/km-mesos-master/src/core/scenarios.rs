//! Scenario tests of the core: calls and the time go in, events come out.
//! Each test reads as a short story of a cluster; [`Sim`] keeps the clock
//! and the bookkeeping of connections out of the way.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use km_mesos::v1::scheduler::{self as sched, call, event};
use km_mesos::{agent, v1};
use tokio::time::Instant;

use super::*;

use v1::framework_info::capability::Type as Cap;

pub(super) struct Sim {
    pub(super) m: Master,
    pub(super) now: Instant,
    next_conn: ConnId,
    /// Framework id → its connection.
    fw_conns: BTreeMap<String, ConnId>,
    /// Agent id → its connection.
    pub(super) agent_conns: BTreeMap<String, ConnId>,
    /// Everything sent so far that the test has not looked at yet.
    sent: Vec<Out>,
}

pub(super) fn config() -> Config {
    Config {
        info: v1::MasterInfo { id: "m".into(), ip: 0, port: 5050, ..Default::default() },
        heartbeat_interval: Duration::from_secs(15),
        offer_timeout: None,
        agent_ping_interval: Duration::from_secs(15),
        agent_unreachable_timeout: Duration::from_secs(75),
        agent_reregister_timeout: Duration::from_secs(600),
        weights: BTreeMap::new(),
        max_completed_tasks: 100,
        max_completed_frameworks: 10,
        seed: 0,
    }
}

pub(super) fn wall() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub(super) fn caps(types: &[Cap]) -> Vec<v1::framework_info::Capability> {
    types
        .iter()
        .map(|t| {
            let mut c = v1::framework_info::Capability::default();
            c.set_type(*t);
            c
        })
        .collect()
}

/// A MULTI_ROLE framework in `roles`.
pub(super) fn multi_role(roles: &[&str]) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        user: "u".into(),
        name: "f".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        capabilities: caps(&[Cap::MultiRole]),
        ..Default::default()
    }
}

/// A framework of one role, in the old format.
pub(super) fn single_role(role: &str) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        user: "u".into(),
        name: "f".into(),
        role: Some(role.into()),
        ..Default::default()
    }
}

pub(super) fn res(text: &str) -> Vec<v1::Resource> {
    km_mesos::flags::parse_resources(text).expect("test resources parse")
}

pub(super) fn scalar(rs: &Resources, name: &str) -> f64 {
    resources_to_proto(rs, Format::Endpoint)
        .iter()
        .filter(|r| r.name == name)
        .filter_map(|r| r.scalar.as_ref().map(|s| s.value))
        .sum()
}

impl Sim {
    pub(super) fn new() -> Sim {
        Sim::with(config())
    }

    pub(super) fn with(config: Config) -> Sim {
        let now = Instant::now();
        Sim {
            m: Master::new(config, now, wall()),
            now,
            next_conn: 1,
            fw_conns: BTreeMap::new(),
            agent_conns: BTreeMap::new(),
            sent: Vec::new(),
        }
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    fn collect(&mut self) {
        let out = self.m.take_outbox();
        self.sent.extend(out);
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
        self.m.tick(self.now, wall() + (self.now - Instant::now()).max(Duration::ZERO));
        self.collect();
    }

    pub(super) fn add_agent(&mut self, hostname: &str, resources: &str) -> String {
        let conn = self.conn();
        let info = v1::AgentInfo {
            hostname: hostname.into(),
            resources: res(resources),
            ..Default::default()
        };
        let subscribe = agent::call::Subscribe { agent_info: info, ..Default::default() };
        let id =
            self.m.subscribe_agent(conn, subscribe, self.now, wall()).expect("agent registers");
        self.agent_conns.insert(id.clone(), conn);
        self.collect();
        id
    }

    pub(super) fn subscribe(&mut self, info: v1::FrameworkInfo) -> String {
        let conn = self.conn();
        let subscribe = call::Subscribe { framework_info: info, ..Default::default() };
        self.m.subscribe_framework(
            conn,
            format!("stream-{conn}"),
            subscribe,
            None,
            self.now,
            wall(),
        );
        self.collect();
        let id = self
            .sent
            .iter()
            .find_map(|o| match o {
                Out::Scheduler(c, e) if *c == conn => {
                    e.subscribed.as_ref().map(|s| s.framework_id.value.clone())
                }
                _ => None,
            })
            .expect("SUBSCRIBED");
        self.fw_conns.insert(id.clone(), conn);
        id
    }

    /// Runs the allocator; returns the offers each framework got.
    pub(super) fn allocate(&mut self) -> Vec<(String, v1::Offer)> {
        self.m.allocate(self.now);
        self.collect();
        let conns: BTreeMap<ConnId, String> =
            self.fw_conns.iter().map(|(f, c)| (*c, f.clone())).collect();
        let mut offers = Vec::new();
        self.sent.retain(|o| match o {
            Out::Scheduler(c, e) if e.r#type() == event::Type::Offers => {
                for offer in e.offers.iter().flat_map(|o| o.offers.iter()) {
                    offers.push((conns.get(c).cloned().unwrap_or_default(), offer.clone()));
                }
                false
            }
            _ => true,
        });
        offers
    }

    pub(super) fn call(&mut self, fw: &str, mut c: sched::Call) -> Result<(), Rejection> {
        c.framework_id = Some(v1::FrameworkId { value: fw.into() });
        let conn = self.fw_conns.get(fw).copied().unwrap_or_default();
        self.m.authorize_call(fw, Some(&format!("stream-{conn}")))?;
        let result = self.m.scheduler_call(c, self.now, wall());
        self.collect();
        result
    }

    pub(super) fn accept(
        &mut self,
        fw: &str,
        offers: &[&v1::Offer],
        operations: Vec<v1::offer::Operation>,
    ) -> Result<(), Rejection> {
        let mut c = sched::Call {
            accept: Some(call::Accept {
                offer_ids: offers.iter().map(|o| o.id.clone()).collect(),
                operations,
                filters: None,
            }),
            ..Default::default()
        };
        c.set_type(call::Type::Accept);
        self.call(fw, c)
    }

    pub(super) fn decline(&mut self, fw: &str, offer: &v1::Offer, refuse_seconds: f64) {
        let mut c = sched::Call {
            decline: Some(call::Decline {
                offer_ids: vec![offer.id.clone()],
                filters: Some(v1::Filters { refuse_seconds: Some(refuse_seconds) }),
            }),
            ..Default::default()
        };
        c.set_type(call::Type::Decline);
        self.call(fw, c).expect("DECLINE is accepted");
    }

    /// The agent reports `state` for a task, as a reliable update.
    pub(super) fn status(&mut self, agent: &str, fw: &str, task: &str, state: TaskState) {
        let mut status = v1::TaskStatus {
            task_id: v1::TaskId { value: task.into() },
            agent_id: Some(v1::AgentId { value: agent.into() }),
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            ..Default::default()
        };
        status.set_state(state);
        status.set_source(Source::Executor);
        let mut c = agent::Call {
            agent_id: Some(v1::AgentId { value: agent.into() }),
            status_update: Some(agent::call::StatusUpdate {
                framework_id: v1::FrameworkId { value: fw.into() },
                status,
            }),
            ..Default::default()
        };
        c.set_type(agent::call::Type::StatusUpdate);
        self.m.agent_call(c, self.now, wall()).expect("status update is accepted");
        self.collect();
    }

    /// What `fw` has allocated (offered or in use) in `role`.
    pub(super) fn allocated(&self, fw: &str, role: &str) -> Resources {
        self.m.frameworks[fw].allocated.get(role).cloned().unwrap_or_default()
    }

    /// Takes the scheduler events `fw` got since the last look.
    pub(super) fn events_of(&mut self, fw: &str) -> Vec<sched::Event> {
        let Some(conn) = self.fw_conns.get(fw).copied() else { return Vec::new() };
        let mut got = Vec::new();
        self.sent.retain(|o| match o {
            Out::Scheduler(c, e) if *c == conn => {
                got.push(e.clone());
                false
            }
            _ => true,
        });
        got
    }
}

impl Sim {
    /// The agent answers a ping.
    pub(super) fn pong(&mut self, agent: &str) {
        let mut c = agent::Call {
            agent_id: Some(v1::AgentId { value: agent.into() }),
            ..Default::default()
        };
        c.set_type(agent::call::Type::Pong);
        self.m.agent_call(c, self.now, wall()).expect("PONG is accepted");
        self.collect();
    }

    /// Takes the agent events `agent` got since the last look, and whether
    /// its stream was closed.
    pub(super) fn events_of_agent(&mut self, agent: &str) -> (Vec<agent::Event>, bool) {
        let Some(conn) = self.agent_conns.get(agent).copied() else { return (Vec::new(), false) };
        let mut got = Vec::new();
        let mut closed = false;
        self.sent.retain(|o| match o {
            Out::Agent(c, e) if *c == conn => {
                got.push(e.clone());
                false
            }
            Out::Close(c) if *c == conn => {
                closed = true;
                false
            }
            _ => true,
        });
        (got, closed)
    }
}

pub(super) fn launch(tasks: Vec<v1::TaskInfo>) -> v1::offer::Operation {
    let mut op = v1::offer::Operation {
        launch: Some(v1::offer::operation::Launch { task_infos: tasks }),
        ..Default::default()
    };
    op.set_type(v1::offer::operation::Type::Launch);
    op
}

pub(super) fn task(id: &str, offer: &v1::Offer, resources: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: v1::TaskId { value: id.into() },
        agent_id: offer.agent_id.clone(),
        resources: res(resources),
        command: Some(v1::CommandInfo { value: Some("true".into()), ..Default::default() }),
        ..Default::default()
    }
}

// === DRF accounting ===

#[test]
fn a_finished_task_gives_back_only_what_its_own_role_was_charged() {
    let mut sim = Sim::new();
    sim.add_agent("h1", "cpus:2;mem:256");
    sim.add_agent("h2", "cpus:2;mem:256");
    let fw = sim.subscribe(multi_role(&["a", "b"]));
    let offers = sim.allocate();
    assert_eq!(offers.len(), 2, "one offer per agent: {offers:?}");
    let role = |o: &v1::Offer| {
        o.allocation_info.as_ref().and_then(|a| a.role.clone()).expect("allocation role")
    };
    let roles: BTreeSet<String> = offers.iter().map(|(_, o)| role(o)).collect();
    assert_eq!(roles.len(), 2, "DRF spreads the agents over both roles: {roles:?}");
    for (_, offer) in &offers {
        let r = role(offer);
        let mut t = task(&format!("t-{r}"), offer, "cpus:1;mem:32");
        for resource in &mut t.resources {
            resource.allocation_info = Some(v1::resource::AllocationInfo { role: Some(r.clone()) });
        }
        sim.accept(&fw, &[offer], vec![launch(vec![t])]).expect("accepted");
    }
    assert_eq!(scalar(&sim.allocated(&fw, "a"), "cpus"), 1.0);
    assert_eq!(scalar(&sim.allocated(&fw, "b"), "cpus"), 1.0);

    // The task in role a finishes: only role a gets its resources back.
    let agent_a =
        offers.iter().find(|(_, o)| role(o) == "a").map(|(_, o)| o.agent_id.value.clone());
    sim.status(&agent_a.expect("an offer in a"), &fw, "t-a", TaskState::TaskFinished);
    assert_eq!(scalar(&sim.allocated(&fw, "a"), "cpus"), 0.0);
    assert_eq!(
        scalar(&sim.allocated(&fw, "b"), "cpus"),
        1.0,
        "role b still runs its task and stays charged for it"
    );
}

#[test]
fn a_task_group_is_charged_to_its_role() {
    let mut sim = Sim::new();
    let agent = sim.add_agent("h1", "cpus:4;mem:1024");
    let fw = sim.subscribe(single_role("web"));
    let offers = sim.allocate();
    let offer = &offers[0].1;
    let executor = v1::ExecutorInfo {
        r#type: Some(v1::executor_info::Type::Default as i32),
        executor_id: v1::ExecutorId { value: "e1".into() },
        resources: res("cpus:0.5;mem:32"),
        ..Default::default()
    };
    let group = v1::offer::operation::LaunchGroup {
        executor,
        task_group: v1::TaskGroupInfo {
            tasks: vec![task("g1", offer, "cpus:1;mem:64"), task("g2", offer, "cpus:1;mem:64")],
        },
    };
    let mut op = v1::offer::Operation { launch_group: Some(group), ..Default::default() };
    op.set_type(v1::offer::operation::Type::LaunchGroup);
    sim.accept(&fw, &[offer], vec![op]).expect("accepted");
    assert!(sim.m.tasks.contains_key(&(fw.clone(), "g1".to_owned())), "the group launched");
    assert_eq!(scalar(&sim.allocated(&fw, "web"), "cpus"), 2.5, "two tasks and their executor");

    // One task finishes: its share goes back; the executor stays charged.
    sim.status(&agent, &fw, "g1", TaskState::TaskFinished);
    assert_eq!(scalar(&sim.allocated(&fw, "web"), "cpus"), 1.5);
}

#[test]
fn a_decline_filter_holds_for_its_refuse_seconds() {
    let mut sim = Sim::new();
    sim.add_agent("h1", "cpus:2;mem:256");
    let fw = sim.subscribe(single_role("*"));
    let offer = sim.allocate().remove(0).1;
    sim.decline(&fw, &offer, 60.0);
    assert!(sim.allocate().is_empty(), "declined for a minute");
    sim.advance(Duration::from_secs(30));
    assert!(sim.allocate().is_empty(), "30 s in, the 60 s filter holds");
    sim.advance(Duration::from_secs(31));
    assert_eq!(sim.allocate().len(), 1, "after 61 s the agent is offered again");
}

#[test]
fn suppress_stops_offers_until_revive() {
    let mut sim = Sim::new();
    sim.add_agent("h1", "cpus:2;mem:256");
    let fw = sim.subscribe(single_role("*"));
    let mut c = sched::Call::default();
    c.set_type(call::Type::Suppress);
    sim.call(&fw, c).expect("SUPPRESS");
    assert!(sim.allocate().is_empty(), "a suppressed framework gets no offers");
    sim.advance(Duration::from_secs(60));
    assert!(sim.allocate().is_empty(), "however long it waits");
    let mut c = sched::Call::default();
    c.set_type(call::Type::Revive);
    sim.call(&fw, c).expect("REVIVE");
    assert_eq!(sim.allocate().len(), 1, "revived, it is offered the agent");
}

#[test]
fn revive_or_suppress_of_a_role_the_framework_is_not_in_is_refused() {
    let mut sim = Sim::new();
    let fw = sim.subscribe(multi_role(&["a"]));
    for t in [call::Type::Revive, call::Type::Suppress] {
        let mut c = sched::Call {
            revive: Some(call::Revive { roles: vec!["b".into()] }),
            suppress: Some(call::Suppress { roles: vec!["b".into()] }),
            ..Default::default()
        };
        c.set_type(t);
        let e = sim.call(&fw, c).expect_err("role b is not the framework's");
        assert_eq!(e.status, 400);
        assert!(e.message.contains("role 'b'"), "{}", e.message);
    }
}

#[test]
fn an_offer_is_rescinded_when_the_offer_timeout_passes() {
    let mut sim = Sim::with(Config { offer_timeout: Some(Duration::from_secs(10)), ..config() });
    sim.add_agent("h1", "cpus:2;mem:256");
    let fw = sim.subscribe(single_role("*"));
    let offer = sim.allocate().remove(0).1;
    sim.events_of(&fw);
    sim.advance(Duration::from_secs(9));
    assert!(!sim.events_of(&fw).iter().any(|e| e.r#type() == event::Type::Rescind), "not yet");
    sim.advance(Duration::from_secs(1));
    let rescinds: Vec<String> = sim
        .events_of(&fw)
        .into_iter()
        .filter_map(|e| e.rescind.map(|r| r.offer_id.value))
        .collect();
    assert_eq!(rescinds, [offer.id.value]);
    assert_eq!(sim.allocate().len(), 1, "the agent is offered again");
}

#[test]
fn weights_give_a_heavier_role_a_larger_share() {
    let weights = [("heavy".to_owned(), 3.0), ("light".to_owned(), 1.0)].into_iter().collect();
    let mut sim = Sim::with(Config { weights, ..config() });
    for i in 0..8 {
        sim.add_agent(&format!("h{i}"), "cpus:1;mem:128");
    }
    let heavy = sim.subscribe(single_role("heavy"));
    let light = sim.subscribe(single_role("light"));
    let offers = sim.allocate();
    let count = |fw: &str| offers.iter().filter(|(f, _)| f == fw).count();
    assert_eq!(offers.len(), 8);
    assert_eq!((count(&heavy), count(&light)), (6, 2), "weighted DRF splits 3:1");
}

// === calls the master cannot carry out are refused, not ignored ===

#[test]
fn an_accept_with_an_unsupported_operation_is_refused_whole_and_keeps_its_offers() {
    let mut sim = Sim::new();
    sim.add_agent("h1", "cpus:2;mem:256");
    let fw = sim.subscribe(single_role("*"));
    let offer = sim.allocate().remove(0).1;
    let mut reserve = v1::offer::Operation {
        reserve: Some(v1::offer::operation::Reserve {
            resources: res("cpus:1"),
            ..Default::default()
        }),
        ..Default::default()
    };
    reserve.set_type(v1::offer::operation::Type::Reserve);
    let ops = vec![launch(vec![task("t1", &offer, "cpus:1;mem:32")]), reserve];
    let e = sim.accept(&fw, &[&offer], ops).expect_err("RESERVE is not supported");
    assert_eq!(e.status, 400);
    assert!(e.message.contains("RESERVE"), "{}", e.message);
    assert!(sim.m.tasks.is_empty(), "the LAUNCH beside it did not happen either");
    assert!(sim.m.offers.contains_key(&offer.id.value), "the offer is still outstanding");
    // The framework can still use the offer as it is.
    sim.accept(&fw, &[&offer], vec![launch(vec![task("t1", &offer, "cpus:1;mem:32")])])
        .expect("a plain LAUNCH");
    assert_eq!(sim.m.tasks.len(), 1);
}

#[test]
fn request_and_inverse_offer_and_operation_acknowledgements_are_refused() {
    let mut sim = Sim::new();
    let fw = sim.subscribe(single_role("*"));
    let mut c = sched::Call { request: Some(call::Request::default()), ..Default::default() };
    c.set_type(call::Type::Request);
    assert_eq!(sim.call(&fw, c).expect_err("REQUEST").status, 501);
    let mut c = sched::Call {
        accept_inverse_offers: Some(call::AcceptInverseOffers {
            inverse_offer_ids: vec![v1::OfferId { value: "io-1".into() }],
            filters: None,
        }),
        ..Default::default()
    };
    c.set_type(call::Type::AcceptInverseOffers);
    let e = sim.call(&fw, c).expect_err("no inverse offer exists");
    assert!(e.message.contains("io-1"), "{}", e.message);
    let mut c = sched::Call {
        acknowledge_operation_status: Some(call::AcknowledgeOperationStatus {
            uuid: vec![0; 16],
            operation_id: v1::OperationId { value: "op".into() },
            ..Default::default()
        }),
        ..Default::default()
    };
    c.set_type(call::Type::AcknowledgeOperationStatus);
    assert_eq!(sim.call(&fw, c).expect_err("nothing to acknowledge").status, 400);
}

#[test]
fn reconcile_operations_answers_each_operation_as_unknown() {
    let mut sim = Sim::new();
    let agent = sim.add_agent("h1", "cpus:2;mem:256");
    let fw = sim.subscribe(single_role("*"));
    sim.events_of(&fw);
    let mut c = sched::Call {
        reconcile_operations: Some(call::ReconcileOperations {
            operations: vec![call::reconcile_operations::Operation {
                operation_id: v1::OperationId { value: "op-1".into() },
                agent_id: Some(v1::AgentId { value: agent }),
                resource_provider_id: None,
            }],
        }),
        ..Default::default()
    };
    c.set_type(call::Type::ReconcileOperations);
    sim.call(&fw, c).expect("RECONCILE_OPERATIONS");
    let statuses: Vec<v1::OperationStatus> = sim
        .events_of(&fw)
        .into_iter()
        .filter_map(|e| e.update_operation_status.map(|u| u.status))
        .collect();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].state(), v1::OperationState::OperationUnknown);
    assert_eq!(statuses[0].operation_id.as_ref().map(|o| o.value.as_str()), Some("op-1"));
}

// === UPDATE_FRAMEWORK ===

fn update(info: v1::FrameworkInfo, suppressed: &[&str]) -> sched::Call {
    let mut c = sched::Call {
        update_framework: Some(call::UpdateFramework {
            framework_info: info,
            suppressed_roles: suppressed.iter().map(|r| r.to_string()).collect(),
            offer_constraints: None,
        }),
        ..Default::default()
    };
    c.set_type(call::Type::UpdateFramework);
    c
}

#[test]
fn update_framework_changes_roles_and_rescinds_offers_of_a_role_left() {
    let mut sim = Sim::new();
    sim.add_agent("h1", "cpus:2;mem:256");
    let fw = sim.subscribe(multi_role(&["a"]));
    let offer = sim.allocate().remove(0).1;
    sim.events_of(&fw);
    let mut info = multi_role(&["b"]);
    info.id = Some(v1::FrameworkId { value: fw.clone() });
    info.name = "renamed".into();
    sim.call(&fw, update(info, &[])).expect("UPDATE_FRAMEWORK");
    let rescinded: Vec<String> = sim
        .events_of(&fw)
        .into_iter()
        .filter_map(|e| e.rescind.map(|r| r.offer_id.value))
        .collect();
    assert_eq!(rescinded, [offer.id.value], "the offer to role a is taken back");
    assert_eq!(sim.m.frameworks[&fw].info.name, "renamed");
    let offers = sim.allocate();
    let role = offers[0].1.allocation_info.as_ref().and_then(|a| a.role.clone());
    assert_eq!(role.as_deref(), Some("b"), "new offers go to the new role");
    assert!(sim.m.take_registry().is_some(), "the registry learns the new FrameworkInfo");
}

#[test]
fn update_framework_can_suppress_and_refuses_what_cannot_change() {
    let mut sim = Sim::new();
    sim.add_agent("h1", "cpus:2;mem:256");
    let fw = sim.subscribe(multi_role(&["a"]));
    let mut info = multi_role(&["a"]);
    info.id = Some(v1::FrameworkId { value: fw.clone() });
    sim.call(&fw, update(info.clone(), &["a"])).expect("suppress through UPDATE_FRAMEWORK");
    assert!(sim.allocate().is_empty(), "role a is suppressed");

    let mut other_user = info.clone();
    other_user.user = "root".into();
    let e = sim.call(&fw, update(other_user, &[])).expect_err("user cannot change");
    assert!(e.message.contains("user"), "{}", e.message);
    let mut no_multi = single_role("a");
    no_multi.id = info.id.clone();
    let e = sim.call(&fw, update(no_multi, &[])).expect_err("MULTI_ROLE cannot be dropped");
    assert!(e.message.contains("MULTI_ROLE"), "{}", e.message);
    let e = sim.call(&fw, update(info, &["z"])).expect_err("suppressed role not a role");
    assert!(e.message.contains("'z'"), "{}", e.message);
    assert!(sim.allocate().is_empty(), "refused updates changed nothing: a stays suppressed");
}

// === recovery after a master restart ===

#[test]
fn agents_that_do_not_come_back_become_unreachable_after_the_reregister_timeout() {
    let mut sim =
        Sim::with(Config { agent_reregister_timeout: Duration::from_secs(600), ..config() });
    // A previous run knew agent A and a framework; this run starts from its registry.
    let mut info = single_role("*");
    info.id = Some(v1::FrameworkId { value: "fw-1".into() });
    info.failover_timeout = Some(3600.0);
    info.capabilities = caps(&[Cap::PartitionAware]);
    let agent_info = v1::AgentInfo {
        id: Some(v1::AgentId { value: "A".into() }),
        hostname: "a".into(),
        resources: res("cpus:2;mem:256"),
        ..Default::default()
    };
    let registry = agent::Registry {
        agents: vec![agent_info.clone()],
        frameworks: vec![info.clone()],
        removed_framework_ids: vec![],
    };
    sim.m.recover(registry, sim.now, wall());
    let fw = sim.subscribe(info);
    let reconcile = || {
        let mut c = sched::Call {
            reconcile: Some(call::Reconcile {
                tasks: vec![call::reconcile::Task {
                    task_id: v1::TaskId { value: "t1".into() },
                    agent_id: Some(v1::AgentId { value: "A".into() }),
                }],
            }),
            ..Default::default()
        };
        c.set_type(call::Type::Reconcile);
        c
    };
    let updates = |sim: &mut Sim| -> Vec<TaskState> {
        sim.events_of(&fw).into_iter().filter_map(|e| e.update.map(|u| u.status.state())).collect()
    };
    updates(&mut sim);
    sim.call(&fw, reconcile()).expect("RECONCILE");
    assert!(updates(&mut sim).is_empty(), "agent A may still come back: no answer yet");

    sim.advance(Duration::from_secs(599));
    sim.call(&fw, reconcile()).expect("RECONCILE");
    assert!(updates(&mut sim).is_empty(), "still within the timeout");

    sim.advance(Duration::from_secs(1));
    assert!(sim.m.take_registry().is_some(), "the registry is rewritten");
    sim.call(&fw, reconcile()).expect("RECONCILE");
    assert_eq!(updates(&mut sim), [TaskState::TaskUnreachable]);

    // Agent A comes back after all and is taken as a returning agent.
    let conn = 99;
    let subscribe = agent::call::Subscribe { agent_info, ..Default::default() };
    let id = sim.m.subscribe_agent(conn, subscribe, sim.now, wall()).expect("A re-registers");
    assert_eq!(id, "A");
    assert!(sim.m.unreachable.is_empty());
}

// === agents that stop answering ===

#[test]
fn a_silent_agent_is_pinged_then_cut_off_and_its_tasks_are_unreachable() {
    let mut sim = Sim::new(); // pinged every 15 s, unreachable after 75 s of silence
    let quiet = sim.add_agent("quiet", "cpus:2;mem:256");
    let alive = sim.add_agent("alive", "cpus:2;mem:256");
    let mut info = single_role("*");
    info.checkpoint = Some(true);
    info.capabilities = caps(&[Cap::PartitionAware]);
    let fw = sim.subscribe(info);
    let offers = sim.allocate();
    let on_quiet = offers.iter().find(|(_, o)| o.agent_id.value == quiet).expect("offer").1.clone();
    sim.accept(&fw, &[&on_quiet], vec![launch(vec![task("t1", &on_quiet, "cpus:1;mem:32")])])
        .expect("launch");
    sim.events_of(&fw);
    let mut pings = 0;
    for _ in 0..4 {
        sim.advance(Duration::from_secs(15));
        sim.pong(&alive);
        let (events, closed) = sim.events_of_agent(&quiet);
        pings += events.iter().filter(|e| e.r#type() == agent::event::Type::Heartbeat).count();
        assert!(!closed, "not yet");
    }
    assert_eq!(pings, 4, "the quiet agent was pinged every 15 s");
    assert!(sim.m.agents.contains_key(&quiet), "60 s of silence is within the limit");

    sim.advance(Duration::from_secs(15));
    let (_, closed) = sim.events_of_agent(&quiet);
    assert!(closed, "the silent agent's stream is closed");
    assert!(!sim.m.agents.contains_key(&quiet) && sim.m.unreachable.contains_key(&quiet));
    assert!(sim.m.agents.contains_key(&alive), "the agent that answers stays");
    let states: Vec<TaskState> =
        sim.events_of(&fw).into_iter().filter_map(|e| e.update.map(|u| u.status.state())).collect();
    assert_eq!(states, [TaskState::TaskUnreachable]);
}
