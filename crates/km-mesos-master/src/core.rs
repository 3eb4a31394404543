//! The master's state machine.
//!
//! [`Master`] owns every framework, agent, offer and task. Its methods take
//! the current time as an argument and never do IO: what must be sent is
//! queued as [`Out`] effects, which the server loop delivers to connections.
//! HTTP-level checks (content types, call validation) happen before a call
//! gets here; what is decided here is everything Mesos decides with its state.
//!
//! This file holds the state itself, recovery from the registry and the
//! sending helpers; each responsibility's methods live in a submodule:
//! [`frameworks`] (subscription and scheduler calls), [`offers`] (allocation),
//! [`accept`] (launching), [`tasks`] (kill, acknowledgement, reconciliation),
//! [`agents`] (registration, status updates, agent loss), [`tick`] (timers)
//! and [`views`] (operator answers). Scenario tests drive the whole core:
//! `wire` (calls in, events out) and `props` (random sequences with invariants).

// Frameworks without MULTI_ROLE use the deprecated single `role`; speaking
// their format is part of the job.
#![allow(deprecated)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use km_mesos::agent;
use km_mesos::v1::master as op;
use km_mesos::v1::scheduler::{self as sched, call, event};
use km_mesos::v1::{self, TaskState, task_status::Reason, task_status::Source};
use rand::seq::SliceRandom as _;
use tokio::time::Instant;

use km_mesos::resources::{
    Format, ResourceError, attribute_from_proto, attributes_state_object, resources_from_proto,
    resources_to_proto, state_object,
};
use km_resources::{Resources, validate_role};

use crate::allocator::{self, Client, FilterKey, Filters, is_allocatable};

/// Identifies one open stream (a framework's, an agent's or an operator's).
pub(crate) type ConnId = u64;

/// What the master wants sent.
#[derive(Debug)]
pub(crate) enum Out {
    Scheduler(ConnId, sched::Event),
    Agent(ConnId, agent::Event),
    Operator(ConnId, op::Event),
    /// End a stream (after its last event).
    Close(ConnId),
}

/// A call refused with an HTTP status, as Mesos would answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) status: u16,
    pub(crate) message: String,
}

impl Rejection {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

/// Static configuration of the master.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) info: v1::MasterInfo,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) offer_timeout: Option<Duration>,
    /// How often agents are pinged (a HEARTBEAT event they answer with PONG).
    pub(crate) agent_ping_interval: Duration,
    /// How long an agent may stay away (disconnected, or connected but silent:
    /// no PONG nor any other call) before it is unreachable.
    pub(crate) agent_unreachable_timeout: Duration,
    /// How long agents known from the registry have to re-register after a
    /// restart before they are unreachable.
    pub(crate) agent_reregister_timeout: Duration,
    pub(crate) weights: BTreeMap<String, f64>,
    pub(crate) max_completed_tasks: usize,
    pub(crate) max_completed_frameworks: usize,
    /// Seed of the allocator's randomness (the order agents are visited in): a run, or a
    /// failing test case, replays from its seed.
    pub(crate) seed: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Caps {
    multi_role: bool,
    partition_aware: bool,
    refinement: bool,
    gpu: bool,
}

impl Caps {
    fn of(info: &v1::FrameworkInfo) -> Caps {
        use v1::framework_info::capability::Type;
        let has = |t: Type| info.capabilities.iter().any(|c| c.r#type() == t);
        Caps {
            multi_role: has(Type::MultiRole),
            partition_aware: has(Type::PartitionAware),
            refinement: has(Type::ReservationRefinement),
            gpu: has(Type::GpuResources),
        }
    }
}

#[derive(Debug)]
struct Framework {
    info: v1::FrameworkInfo,
    caps: Caps,
    roles: Vec<String>,
    suppressed: BTreeSet<String>,
    conn: Option<ConnId>,
    stream_id: Option<String>,
    last_heartbeat: Instant,
    failover_deadline: Option<Instant>,
    filters: Filters,
    offers: BTreeSet<String>,
    /// Offered or used resources per role (DRF input).
    allocated: BTreeMap<String, Resources>,
    registered_time: f64,
    reregistered_time: Option<f64>,
    unregistered_time: Option<f64>,
}

impl Framework {
    fn connected(&self) -> bool {
        self.conn.is_some()
    }
    fn alloc_role<'a>(&self, role: &'a str) -> Option<&'a str> {
        self.caps.multi_role.then_some(role)
    }
}

#[derive(Debug)]
struct Agent {
    info: v1::AgentInfo,
    total: Resources,
    used: Resources,
    offered: Resources,
    conn: Option<ConnId>,
    disconnected_at: Option<Instant>,
    /// When the agent last called (a PONG, a status update, its SUBSCRIBE).
    last_seen: Instant,
    /// When the agent was last pinged.
    last_ping: Instant,
    capabilities: Vec<v1::agent_info::Capability>,
    version: String,
    registered_time: f64,
    reregistered_time: Option<f64>,
    /// (framework, executor) → the executor.
    executors: BTreeMap<(String, String), Executor>,
    /// The address its SUBSCRIBE came from (none for simulated agents).
    ip: Option<std::net::IpAddr>,
}

/// An executor on an agent, with the resources and role it is charged to.
#[derive(Debug)]
struct Executor {
    info: v1::ExecutorInfo,
    resources: Resources,
    role: String,
}

impl Agent {
    fn id(&self) -> &str {
        self.info.id.as_ref().map(|i| i.value.as_str()).unwrap_or_default()
    }
    /// Where the agent's HTTP API is reached: the IP it connected from (its hostname when not
    /// known) and the port it advertises.
    fn endpoint(&self) -> String {
        let port = self.info.port.unwrap_or(5051);
        match self.ip {
            Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            Some(ip) => format!("{ip}:{port}"),
            None => format!("{}:{port}", self.info.hostname),
        }
    }
    /// Mesos's process ID of the agent, `slave(1)@host:port`.
    fn pid(&self) -> String {
        format!("slave(1)@{}", self.endpoint())
    }
    fn free(&self) -> Resources {
        let mut free = self.total.clone();
        free.subtract(&self.used);
        free.subtract(&self.offered);
        free
    }
    fn has_gpus(&self) -> bool {
        !self.total.scalar("gpus").is_zero()
    }
}

#[derive(Debug)]
struct OfferRec {
    framework_id: String,
    agent_id: String,
    role: String,
    resources: Resources,
    created: Instant,
}

#[derive(Debug)]
struct Task {
    task: v1::Task,
    /// The role the task's resources are charged to (DRF).
    role: String,
    resources: Resources,
    /// Uuid of the terminal update, once seen: its ACK retires the task.
    terminal_uuid: Option<Vec<u8>>,
}

#[derive(Debug)]
enum Owner {
    Framework(String),
    Agent(String),
    Operator,
}

/// The master.
#[derive(Debug)]
pub(crate) struct Master {
    config: Config,
    rng: rand::rngs::StdRng,
    frameworks: BTreeMap<String, Framework>,
    completed_frameworks: Vec<v1::FrameworkInfo>,
    removed_framework_ids: BTreeSet<String>,
    agents: BTreeMap<String, Agent>,
    /// Agents that stayed away too long: id → when they became unreachable.
    unreachable: BTreeMap<String, (v1::AgentInfo, f64)>,
    /// Agents an operator marked gone (MARK_AGENT_GONE): never to return.
    gone: BTreeSet<String>,
    /// Agents known from the registry that have not re-registered since a restart.
    recovered: BTreeMap<String, v1::AgentInfo>,
    /// When the agents still in `recovered` become unreachable.
    recovery_deadline: Option<Instant>,
    /// Agents or frameworks changed since the registry was last written.
    registry_dirty: bool,
    offers: BTreeMap<String, OfferRec>,
    /// (framework, task) → task.
    tasks: BTreeMap<(String, String), Task>,
    unreachable_tasks: BTreeMap<(String, String), v1::Task>,
    completed_tasks: std::collections::VecDeque<v1::Task>,
    conns: HashMap<ConnId, Owner>,
    operator_conns: BTreeSet<ConnId>,
    operator_heartbeat: Instant,
    next_framework: u64,
    next_agent: u64,
    next_offer: u64,
    allocation_wanted: bool,
    out: Vec<Out>,
    start_time: f64,
}

/// Seconds since the epoch (for the timestamps Mesos reports).
pub(crate) fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

pub(crate) fn is_terminal(state: TaskState) -> bool {
    use TaskState::*;
    matches!(
        state,
        TaskFinished
            | TaskFailed
            | TaskKilled
            | TaskLost
            | TaskError
            | TaskDropped
            | TaskGone
            | TaskGoneByOperator
    )
}

/// Mesos's ID rules for task, executor and framework IDs.
fn valid_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("ID must not be empty".into());
    }
    if id.len() > 255 {
        return Err(format!("ID '{id}' is longer than 255 bytes"));
    }
    if id == "." || id == ".." {
        return Err(format!("'{id}' is disallowed"));
    }
    if id.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
        return Err(format!("ID '{id}' contains a control character, '/' or '\\'"));
    }
    Ok(())
}

/// Resources from the wire as the master counts them. The master keeps its
/// books unallocated (allocation roles are added to what goes out to MULTI_ROLE
/// frameworks, and ignored on what comes back), as it always has.
fn bag(rs: &[v1::Resource]) -> Result<Resources, ResourceError> {
    Ok(resources_from_proto(rs)?.unallocated())
}

impl Master {
    pub(crate) fn new(config: Config, now: Instant, wall: SystemTime) -> Self {
        Master {
            rng: rand::SeedableRng::seed_from_u64(config.seed),
            config,
            frameworks: BTreeMap::new(),
            completed_frameworks: Vec::new(),
            removed_framework_ids: BTreeSet::new(),
            agents: BTreeMap::new(),
            unreachable: BTreeMap::new(),
            recovered: BTreeMap::new(),
            recovery_deadline: None,
            gone: BTreeSet::new(),
            registry_dirty: false,
            offers: BTreeMap::new(),
            tasks: BTreeMap::new(),
            unreachable_tasks: BTreeMap::new(),
            completed_tasks: Default::default(),
            conns: HashMap::new(),
            operator_conns: BTreeSet::new(),
            operator_heartbeat: now,
            next_framework: 0,
            next_agent: 0,
            next_offer: 0,
            allocation_wanted: false,
            out: Vec::new(),
            start_time: epoch_secs(wall),
        }
    }

    pub(crate) fn master_info(&self) -> &v1::MasterInfo {
        &self.config.info
    }

    fn master_id(&self) -> &str {
        &self.config.info.id
    }

    /// The role `resources` of a framework are allocated to: a MULTI_ROLE
    /// framework's resources say it; any other framework has one role.
    fn role_of(&self, fw_id: &str, resources: &[v1::Resource]) -> String {
        resources
            .iter()
            .find_map(|r| r.allocation_info.as_ref()?.role.clone())
            .or_else(|| self.frameworks.get(fw_id)?.roles.first().cloned())
            .unwrap_or_else(|| "*".into())
    }

    /// Counts `resources` against a framework's role (DRF).
    fn charge(&mut self, fw_id: &str, role: &str, resources: &Resources) {
        if let Some(fw) = self.frameworks.get_mut(fw_id) {
            fw.allocated.entry(role.to_owned()).or_default().add(resources);
        }
    }

    /// Gives back what [`Self::charge`] counted, to that role alone.
    fn release(&mut self, fw_id: &str, role: &str, resources: &Resources) {
        if let Some(alloc) = self.frameworks.get_mut(fw_id).and_then(|f| f.allocated.get_mut(role))
        {
            alloc.subtract(resources);
        }
    }

    pub(crate) fn take_outbox(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    /// Restores what a previous run recorded: its agents come back as
    /// "recovered" until they re-register; its frameworks are known (and are
    /// removed if they do not re-subscribe within their failover timeout).
    pub(crate) fn recover(&mut self, registry: agent::Registry, now: Instant, wall: SystemTime) {
        for info in registry.agents {
            if let Some(id) = info.id.as_ref().map(|i| i.value.clone()) {
                self.recovered.insert(id, info);
            }
        }
        if !self.recovered.is_empty() {
            self.recovery_deadline = now.checked_add(self.config.agent_reregister_timeout);
        }
        self.removed_framework_ids.extend(registry.removed_framework_ids);
        for info in registry.frameworks {
            let Some(id) = info.id.as_ref().map(|i| i.value.clone()) else { continue };
            let timeout = info.failover_timeout.unwrap_or(0.0);
            if timeout <= 0.0 || self.removed_framework_ids.contains(&id) {
                continue;
            }
            let deadline = after(now, timeout);
            self.insert_disconnected_framework(id, info, now, epoch_secs(wall), deadline);
        }
        tracing::info!(
            agents = self.recovered.len(),
            frameworks = self.frameworks.len(),
            "recovered the registry"
        );
    }

    /// What must survive a restart, if it changed since the last call.
    pub(crate) fn take_registry(&mut self) -> Option<agent::Registry> {
        if !std::mem::take(&mut self.registry_dirty) {
            return None;
        }
        let mut agents: Vec<v1::AgentInfo> = self.agents.values().map(|a| a.info.clone()).collect();
        agents.extend(self.unreachable.values().map(|(info, _)| info.clone()));
        agents.extend(self.recovered.values().cloned());
        Some(agent::Registry {
            agents,
            frameworks: self.frameworks.values().map(|f| f.info.clone()).collect(),
            removed_framework_ids: self.removed_framework_ids.iter().cloned().collect(),
        })
    }

    fn insert_disconnected_framework(
        &mut self,
        id: String,
        info: v1::FrameworkInfo,
        now: Instant,
        now_s: f64,
        failover_deadline: Option<Instant>,
    ) {
        let caps = Caps::of(&info);
        let roles = if caps.multi_role {
            info.roles.clone()
        } else {
            vec![info.role.clone().unwrap_or_else(|| "*".into())]
        };
        self.frameworks.insert(
            id,
            Framework {
                info,
                caps,
                roles,
                suppressed: BTreeSet::new(),
                conn: None,
                stream_id: None,
                last_heartbeat: now,
                failover_deadline,
                filters: Filters::default(),
                offers: BTreeSet::new(),
                allocated: BTreeMap::new(),
                registered_time: now_s,
                reregistered_time: None,
                unregistered_time: None,
            },
        );
    }

    /// Whether something asked for an allocation run since the last one.
    pub(crate) fn allocation_wanted(&self) -> bool {
        self.allocation_wanted
    }

    pub(crate) fn outstanding_offers(&self) -> usize {
        self.offers.len()
    }

    /// Returns every outstanding offer without a filter (benchmarks).
    pub(crate) fn decline_all_offers(&mut self, now: Instant) {
        let ids: Vec<String> = self.offers.keys().cloned().collect();
        for id in ids {
            self.recover_offer(&id, None, now);
        }
    }

    // === sending ===

    fn send_framework(&mut self, framework_id: &str, event: sched::Event) {
        if let Some(conn) = self.frameworks.get(framework_id).and_then(|f| f.conn) {
            self.out.push(Out::Scheduler(conn, event));
        }
    }

    fn send_agent(&mut self, agent_id: &str, event: agent::Event) {
        if let Some(conn) = self.agents.get(agent_id).and_then(|a| a.conn) {
            self.out.push(Out::Agent(conn, event));
        }
    }

    fn broadcast_operator(&mut self, event: op::Event) {
        for &conn in &self.operator_conns {
            self.out.push(Out::Operator(conn, event.clone()));
        }
    }

    fn update_event(status: v1::TaskStatus) -> sched::Event {
        let mut e = sched::Event { update: Some(event::Update { status }), ..Default::default() };
        e.set_type(event::Type::Update);
        e
    }

    /// A status the master itself generates: no uuid, never retried.
    fn master_status(
        &self,
        task_id: &str,
        state: TaskState,
        reason: Reason,
        message: String,
        agent_id: Option<&str>,
        wall: SystemTime,
    ) -> v1::TaskStatus {
        let mut s = v1::TaskStatus {
            task_id: v1::TaskId { value: task_id.into() },
            message: Some(message),
            agent_id: agent_id.map(|a| v1::AgentId { value: a.into() }),
            timestamp: Some(epoch_secs(wall)),
            ..Default::default()
        };
        s.set_state(state);
        s.set_reason(reason);
        s.set_source(Source::Master);
        s
    }

    // === connections ===

    /// A stream ended (the peer went away, or we closed it).
    pub(crate) fn conn_closed(&mut self, conn: ConnId, now: Instant, wall: SystemTime) {
        match self.conns.remove(&conn) {
            Some(Owner::Framework(id)) => self.framework_disconnected(&id, conn, now, wall),
            Some(Owner::Agent(id)) => self.agent_disconnected(&id, conn, now, wall),
            Some(Owner::Operator) => {
                self.operator_conns.remove(&conn);
            }
            None => {}
        }
    }
}

fn heartbeat() -> sched::Event {
    let mut e = sched::Event::default();
    e.set_type(event::Type::Heartbeat);
    e
}

/// `secs` seconds (a value from the network) after `now`; `None` when no clock reaches it,
/// which for a failover timeout means the framework waits for ever.
fn after(now: Instant, secs: f64) -> Option<Instant> {
    Duration::try_from_secs_f64(secs).ok().and_then(|d| now.checked_add(d))
}

/// The refusal a DECLINE or ACCEPT installs: `refuse_seconds` (default 5 s;
/// negative means the default; 0 means none; at most a year).
fn refuse_seconds(filters: Option<&v1::Filters>) -> Option<Duration> {
    let secs = filters.and_then(|f| f.refuse_seconds).unwrap_or(5.0);
    let secs = if secs < 0.0 || secs.is_nan() { 5.0 } else { secs.min(365.0 * 86_400.0) };
    (secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Whether a task's ExecutorInfo matches the running one (ignoring what the
/// master fills in itself).
fn same_executor(running: &v1::ExecutorInfo, given: &v1::ExecutorInfo, fw_id: &str) -> bool {
    let normalize = |e: &v1::ExecutorInfo| {
        let mut e = e.clone();
        e.framework_id = Some(v1::FrameworkId { value: fw_id.into() });
        for r in &mut e.resources {
            r.allocation_info = None;
        }
        e
    };
    normalize(running) == normalize(given)
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod wire;

mod accept;
mod agents;
mod frameworks;
mod legacy;
pub(crate) use legacy::TaskQuery;
mod offers;
mod tasks;
mod tick;
mod views;
