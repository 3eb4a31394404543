//! A deterministic simulation of what surrounds the core: a Mesos master with agents (offers,
//! filters, suppression, launches, kills, reconciliation, status updates) and an API server
//! (pods, bindings, phases, deletions). No sockets, no real time.
//!
//! While it runs it checks the core's promises and records every breach in `violations`:
//! one live task per pod at most, no offer used twice, launches within the offered resources,
//! no running pod killed while it exists and is not being deleted.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use km_offer_matcher::{Offer, Resource};
use km_scheduler_core::task::{self, TASK_ID};
use km_scheduler_core::{
    Config, Core, Effect, ExecutorChoice, Input, Now, PhaseChange, Source, TaskState, TaskUpdate,
    WriteResult,
};

use crate::harness::{EXEC, config, pod};

const AGENT_CPUS: i64 = 4000;
const AGENT_MEM: i64 = 16384 * 1000;

struct Agent {
    id: String,
    host: String,
    used_cpus: i64,
    used_mem: i64,
    filter_until: Duration,
    offered: bool,
    executor: Option<(i64, i64)>,
}

struct SimTask {
    agent: String,
    pod_uid: String,
    cpus: i64,
    mem: i64,
    state: TaskState,
}

pub struct Sim {
    pub core: Core,
    pub now: Duration,
    cfg: Config,
    agents: Vec<Agent>,
    offers: BTreeMap<String, (String, i64, i64)>,
    consumed_offers: BTreeSet<String>,
    next_id: u64,
    suppressed: bool,
    tasks: BTreeMap<String, SimTask>,
    updates: VecDeque<(Duration, TaskUpdate)>,
    pub pods: BTreeMap<String, Pod>,
    nodes: BTreeMap<String, String>,
    pub violations: Vec<String>,
    pub launches: usize,
}

fn scalar(rs: &[Resource], name: &str) -> i64 {
    rs.iter().filter(|r| r.name == name).filter_map(Resource::as_scalar).map(|s| s.milli()).sum()
}

impl Sim {
    pub fn new(agents: usize) -> Sim {
        let cfg = config();
        let mut sim = Sim {
            core: Core::new(cfg.clone()).expect("config"),
            now: Duration::ZERO,
            cfg,
            agents: Vec::new(),
            offers: BTreeMap::new(),
            consumed_offers: BTreeSet::new(),
            next_id: 0,
            suppressed: false,
            tasks: BTreeMap::new(),
            updates: VecDeque::new(),
            pods: BTreeMap::new(),
            nodes: BTreeMap::new(),
            violations: Vec::new(),
            launches: 0,
        };
        for _ in 0..agents {
            sim.add_agent();
        }
        sim.start_core();
        sim
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    fn now(&self) -> Now {
        Now::at(self.now)
    }

    fn add_agent(&mut self) {
        let id = self.id("agent-");
        self.agents.push(Agent {
            host: format!("host-{id}"),
            id,
            used_cpus: 0,
            used_mem: 0,
            filter_until: Duration::ZERO,
            offered: false,
            executor: None,
        });
    }

    /// A fresh core (a restarted scheduler) that subscribes and lists the pods.
    pub fn start_core(&mut self) {
        self.core = Core::new(self.cfg.clone()).expect("config");
        self.offers.clear();
        for a in &mut self.agents {
            a.offered = false;
            a.filter_until = Duration::ZERO;
        }
        self.suppressed = false;
        let now = self.now();
        self.core.handle(Input::Subscribed { framework_id: "fw".into() }, now);
        for (host, agent) in &self.nodes {
            self.core.handle(
                Input::NodeKnown(km_scheduler_core::NodeInfo {
                    name: host.clone(),
                    agent_id: Some(agent.clone()),
                    executor_id: None,
                    executor_resources: None,
                }),
                now,
            );
        }
        self.core.handle(Input::PodResyncStarted, now);
        let pods: Vec<Pod> = self.pods.values().cloned().collect();
        for p in pods {
            self.core.handle(Input::PodApplied(Arc::new(p)), now);
        }
        self.core.handle(Input::PodResyncDone, now);
        self.run_effects();
    }

    /// The subscription drops and comes back (offers are void).
    pub fn resubscribe(&mut self) {
        let now = self.now();
        self.core.handle(Input::Disconnected, now);
        self.offers.clear();
        for a in &mut self.agents {
            a.offered = false;
        }
        self.suppressed = false;
        self.core.handle(Input::Subscribed { framework_id: "fw".into() }, now);
        self.run_effects();
    }

    pub fn create_pod(&mut self, cpu_milli: u32) {
        let name = self.id("p");
        let p = pod(&name, cpu_milli);
        let uid = p.metadata.uid.clone().unwrap_or_default();
        self.pods.insert(uid, p.clone());
        self.core.handle(Input::PodApplied(Arc::new(p)), self.now());
        self.run_effects();
    }

    /// Deletes the `n`-th pod: at once when unbound, gracefully when bound.
    pub fn delete_pod(&mut self, n: usize) {
        let Some(uid) = self.pods.keys().nth(n % self.pods.len().max(1)).cloned() else { return };
        let now = self.now();
        let p = self.pods.get_mut(&uid).expect("present");
        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let ended = matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if bound && !ended {
            if p.metadata.deletion_timestamp.is_none() {
                p.metadata.deletion_timestamp = Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("valid"),
                ));
                p.metadata.deletion_grace_period_seconds = Some(1);
                let p = p.clone();
                self.core.handle(Input::PodApplied(Arc::new(p)), now);
            }
        } else {
            let p = self.pods.remove(&uid).expect("present");
            self.core.handle(Input::PodDeleted(Arc::new(p)), now);
        }
        self.run_effects();
    }

    /// One allocation: every unfiltered agent with free resources and no outstanding offer
    /// offers them.
    pub fn allocate(&mut self) {
        if self.suppressed {
            return;
        }
        let mut offers = Vec::new();
        let now = self.now;
        let mut ids = Vec::new();
        for i in 0..self.agents.len() {
            let a = &self.agents[i];
            let (cpus, mem) = (AGENT_CPUS - a.used_cpus, AGENT_MEM - a.used_mem);
            if a.offered || a.filter_until > now || cpus <= 0 {
                continue;
            }
            ids.push((i, cpus, mem));
        }
        for (i, cpus, mem) in ids {
            let id = self.id("offer-");
            let a = &mut self.agents[i];
            a.offered = true;
            let mut o = Offer::new(
                id.clone(),
                a.id.clone(),
                a.host.clone(),
                vec![
                    Resource::scalar("cpus", cpus as f64 / 1000.0),
                    Resource::scalar("mem", mem as f64 / 1000.0),
                ],
            );
            if a.executor.is_some() {
                o.executor_ids = vec![EXEC.to_owned()];
            }
            self.offers.insert(id, (a.id.clone(), cpus, mem));
            offers.push(o);
        }
        if !offers.is_empty() {
            self.core.handle(Input::Offers(offers), self.now());
            self.run_effects();
        }
    }

    /// Time passes: due updates are delivered, the core ticks and plans.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        loop {
            let due = self.updates.front().is_some_and(|(at, _)| *at <= self.now);
            if !due {
                break;
            }
            let (_, u) = self.updates.pop_front().expect("due");
            if let Some(t) = self.tasks.get(&u.task_id)
                && t.state.is_terminal()
                && !u.state.is_terminal()
            {
                continue;
            }
            self.core.handle(Input::Update(u), self.now());
        }
        self.core.tick(self.now());
        self.run_effects();
    }

    /// An agent disappears: its tasks are lost, its offer rescinded; a new agent joins.
    pub fn lose_agent(&mut self, n: usize) {
        if self.agents.is_empty() {
            return;
        }
        let a = self.agents.remove(n % self.agents.len());
        let now = self.now();
        let lost: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent == a.id && !t.state.is_terminal())
            .map(|(id, _)| id.clone())
            .collect();
        self.offers.retain(|id, (agent, _, _)| {
            let keep = *agent != a.id;
            if !keep {
                self.core.handle(Input::Rescinded(id.clone()), now);
            }
            keep
        });
        self.core.handle(Input::AgentLost(a.id.clone()), now);
        for id in lost {
            self.end_task(&id, TaskState::Lost, Source::Master, None);
        }
        self.add_agent();
        self.run_effects();
    }

    /// The executor reports the `n`-th live task failed.
    pub fn fail_task(&mut self, n: usize) {
        let live: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal())
            .map(|(id, _)| id.clone())
            .collect();
        if live.is_empty() {
            return;
        }
        let id = live[n % live.len()].clone();
        self.end_task(&id, TaskState::Failed, Source::Executor, Some(vec![7]));
        self.run_effects();
    }

    fn end_task(&mut self, id: &str, state: TaskState, source: Source, uuid: Option<Vec<u8>>) {
        let Some(t) = self.tasks.get_mut(id) else { return };
        if t.state.is_terminal() {
            return;
        }
        t.state = state;
        let (agent, cpus, mem) = (t.agent.clone(), t.cpus, t.mem);
        if let Some(a) = self.agents.iter_mut().find(|a| a.id == agent) {
            a.used_cpus -= cpus;
            a.used_mem -= mem;
        }
        let mut u = TaskUpdate::new(id, state);
        u.agent_id = Some(agent);
        u.source = Some(source);
        u.uuid = uuid;
        self.core.handle(Input::Update(u), self.now());
    }

    pub fn run_effects(&mut self) {
        loop {
            self.core.plan(self.now());
            let effects = self.core.take_effects();
            if effects.is_empty() {
                return;
            }
            for e in effects {
                self.effect(e);
            }
        }
    }

    fn consume(&mut self, offer: &str) -> Option<(String, i64, i64)> {
        if !self.consumed_offers.insert(offer.to_owned()) {
            self.violations.push(format!("offer {offer} used twice"));
            return None;
        }
        let o = self.offers.remove(offer)?;
        if let Some(a) = self.agents.iter_mut().find(|a| a.id == o.0) {
            a.offered = false;
        }
        Some(o)
    }

    fn effect(&mut self, e: Effect) {
        let now = self.now();
        match e {
            Effect::Accept(acc) => {
                let mut cpus = 0;
                let mut mem = 0;
                let mut valid = true;
                for id in &acc.offer_ids {
                    match self.consume(id) {
                        Some((agent, c, m)) if agent == acc.agent_id => {
                            cpus += c;
                            mem += m;
                        }
                        _ => valid = false,
                    }
                }
                let agent_exists = self.agents.iter().any(|a| a.id == acc.agent_id);
                let mut want_c: i64 = acc.tasks.iter().map(|t| scalar(&t.resources, "cpus")).sum();
                let mut want_m: i64 = acc.tasks.iter().map(|t| scalar(&t.resources, "mem")).sum();
                let new_exec = match &acc.executor {
                    ExecutorChoice::New(r) => Some((scalar(r, "cpus"), scalar(r, "mem"))),
                    ExecutorChoice::Running(_) => None,
                };
                if let Some((c, m)) = new_exec {
                    want_c += c;
                    want_m += m;
                }
                if valid && agent_exists && (want_c > cpus || want_m > mem) {
                    self.violations.push(format!(
                        "ACCEPT on {} asks cpus {want_c} mem {want_m} of offers with {cpus}/{mem}",
                        acc.agent_id
                    ));
                }
                let filter = self.now + Duration::from_secs_f64(acc.refuse_seconds);
                for t in &acc.tasks {
                    let live = self
                        .tasks
                        .values()
                        .filter(|x| x.pod_uid == *t.pod.uid && !x.state.is_terminal())
                        .count();
                    if live > 0 && valid && agent_exists {
                        self.violations.push(format!("second live task for pod {}", t.pod));
                    }
                }
                for t in acc.tasks {
                    if valid && agent_exists {
                        self.launches += 1;
                        let (c, m) = (scalar(&t.resources, "cpus"), scalar(&t.resources, "mem"));
                        self.tasks.insert(
                            t.task_id.clone(),
                            SimTask {
                                agent: acc.agent_id.clone(),
                                pod_uid: t.pod.uid.to_string(),
                                cpus: c,
                                mem: m,
                                state: TaskState::Staging,
                            },
                        );
                        let mut s = TaskUpdate::new(&t.task_id, TaskState::Starting);
                        s.agent_id = Some(acc.agent_id.clone());
                        s.source = Some(Source::Executor);
                        s.uuid = Some(vec![1]);
                        let mut r = s.clone();
                        r.state = TaskState::Running;
                        self.updates.push_back((self.now + Duration::from_millis(10), s));
                        self.updates.push_back((self.now + Duration::from_millis(20), r));
                        if let Some(tk) = self.tasks.get_mut(&t.task_id) {
                            tk.state = TaskState::Running;
                        }
                    } else {
                        let mut u = TaskUpdate::new(&t.task_id, TaskState::Dropped);
                        u.agent_id = Some(acc.agent_id.clone());
                        u.source = Some(Source::Master);
                        u.reason = Some("REASON_INVALID_OFFERS".into());
                        self.updates.push_back((self.now, u));
                    }
                }
                if valid && agent_exists {
                    let a = self.agents.iter_mut().find(|a| a.id == acc.agent_id).expect("exists");
                    a.used_cpus += want_c;
                    a.used_mem += want_m;
                    if let Some(ex) = new_exec {
                        a.executor = Some(ex);
                    }
                    a.filter_until = filter;
                }
                self.core.handle(
                    Input::AcceptDone {
                        agent_id: acc.agent_id,
                        task_ids: Vec::new(),
                        outcome: km_scheduler_core::AcceptOutcome::Accepted,
                    },
                    now,
                );
            }
            Effect::Decline { offer_ids, refuse_seconds } => {
                for id in offer_ids {
                    if let Some((agent, _, _)) = self.consume(&id)
                        && let Some(a) = self.agents.iter_mut().find(|a| a.id == agent)
                    {
                        a.filter_until = self.now + Duration::from_secs_f64(refuse_seconds);
                    }
                }
            }
            Effect::Revive => {
                self.suppressed = false;
                for a in &mut self.agents {
                    a.filter_until = Duration::ZERO;
                }
            }
            Effect::Suppress => self.suppressed = true,
            Effect::Kill { task_id, .. } => {
                if let Some(t) = self.tasks.get(&task_id)
                    && !t.state.is_terminal()
                {
                    let pod = self.pods.get(&t.pod_uid);
                    let protected = pod.is_some_and(|p| {
                        p.metadata.deletion_timestamp.is_none()
                            && p.metadata.annotations.as_ref().and_then(|a| a.get(TASK_ID))
                                == Some(&task_id)
                            && !matches!(
                                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                                Some("Failed" | "Succeeded")
                            )
                    });
                    if protected {
                        self.violations
                            .push(format!("killed running task {task_id} of a live pod"));
                    }
                    self.end_task(&task_id, TaskState::Killed, Source::Executor, Some(vec![2]));
                }
            }
            Effect::Acknowledge { .. } => {}
            Effect::Reconcile { tasks } => {
                let ids: Vec<String> = if tasks.is_empty() {
                    self.tasks
                        .iter()
                        .filter(|(_, t)| !t.state.is_terminal())
                        .map(|(id, _)| id.clone())
                        .collect()
                } else {
                    tasks.into_iter().map(|(id, _)| id).collect()
                };
                for id in ids {
                    let (state, agent) = match self.tasks.get(&id) {
                        Some(t) => (t.state, Some(t.agent.clone())),
                        None => (TaskState::Unknown, None),
                    };
                    let mut u = TaskUpdate::new(id, state);
                    u.agent_id = agent;
                    u.source = Some(Source::Master);
                    u.reason = Some("REASON_RECONCILIATION".into());
                    self.updates.push_back((self.now, u));
                }
            }
            Effect::Bind { pod, node, task_id, annotations } => {
                let result = match self.pods.get_mut(&*pod.uid) {
                    Some(p)
                        if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none()
                            && p.metadata.deletion_timestamp.is_none() =>
                    {
                        p.spec.as_mut().expect("spec").node_name = Some(node);
                        let ann = p.metadata.annotations.get_or_insert_with(Default::default);
                        for (k, v) in annotations {
                            ann.insert(k, v);
                        }
                        WriteResult::Ok
                    }
                    _ => WriteResult::Rejected("gone or bound".into()),
                };
                self.core.handle(Input::BindDone { task_id, result: result.clone() }, now);
                if result == WriteResult::Ok
                    && let Some(p) = self.pods.get(&*pod.uid)
                {
                    self.core.handle(Input::PodApplied(Arc::new(p.clone())), now);
                }
            }
            Effect::SetPhase { pod, change } => {
                if let Some(p) = self.pods.get_mut(&*pod.uid) {
                    let current = p.status.as_ref().and_then(|s| s.phase.clone());
                    let ended = matches!(current.as_deref(), Some("Succeeded" | "Failed"));
                    let phase = match change {
                        PhaseChange::Running if !ended => Some("Running"),
                        PhaseChange::Succeeded if !ended => Some("Succeeded"),
                        PhaseChange::Failed { .. } if !ended => Some("Failed"),
                        _ => None,
                    };
                    if let Some(phase) = phase {
                        p.status =
                            Some(PodStatus { phase: Some(phase.into()), ..Default::default() });
                        let p = p.clone();
                        self.core.handle(Input::PodApplied(Arc::new(p)), now);
                    }
                }
            }
            Effect::DeletePod { pod } => {
                if let Some(p) = self.pods.remove(&*pod.uid) {
                    self.core.handle(Input::PodDeleted(Arc::new(p)), now);
                }
            }
            Effect::EnsureNode(n) => {
                self.nodes.insert(n.name, n.agent_id);
            }
            Effect::Unschedulable { .. } | Effect::Event { .. } | Effect::Message { .. } => {}
        }
    }

    /// Runs allocation cycles with time passing, long enough for every back-off to run out.
    pub fn calm(&mut self, seconds: u32) {
        for _ in 0..seconds * 2 {
            self.allocate();
            self.advance(Duration::from_millis(500));
        }
    }

    /// Pods that exist, are not being deleted, have not ended, and are not bound.
    pub fn unbound_pods(&self) -> Vec<String> {
        self.pods
            .values()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none()
                    && !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
            })
            .filter_map(|p| p.metadata.name.clone())
            .collect()
    }

    /// Live tasks whose pod does not exist or is not bound to them.
    pub fn orphan_tasks(&self) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal())
            .filter(|(id, t)| {
                self.pods.get(&t.pod_uid).is_none_or(|p| {
                    p.metadata.annotations.as_ref().and_then(|a| a.get(TASK_ID)) != Some(*id)
                })
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Pods bound to a task that is not running.
    pub fn bound_without_task(&self) -> Vec<String> {
        self.pods
            .values()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                ) && p.metadata.deletion_timestamp.is_none()
            })
            .filter_map(|p| {
                let id = p.metadata.annotations.as_ref()?.get(task::TASK_ID)?;
                let live = self.tasks.get(id).is_some_and(|t| !t.state.is_terminal());
                (!live).then(|| p.metadata.name.clone().unwrap_or_default())
            })
            .collect()
    }
}
