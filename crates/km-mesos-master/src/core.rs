//! The master's state machine.
//!
//! [`Master`] owns every framework, agent, offer and task. Its methods take
//! the current time as an argument and never do IO: what must be sent is
//! queued as [`Out`] effects, which the server loop delivers to connections.
//! HTTP-level checks (content types, call validation) happen before a call
//! gets here; what is decided here is everything Mesos decides with its state.

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
    /// How long a disconnected agent may stay away before it is unreachable.
    pub(crate) agent_unreachable_timeout: Duration,
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
    capabilities: Vec<v1::agent_info::Capability>,
    version: String,
    registered_time: f64,
    reregistered_time: Option<f64>,
    /// (framework, executor) → its info and resources.
    executors: BTreeMap<(String, String), (v1::ExecutorInfo, Resources)>,
}

impl Agent {
    fn id(&self) -> &str {
        self.info.id.as_ref().map(|i| i.value.as_str()).unwrap_or_default()
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

    pub(crate) fn agent_count(&self) -> usize {
        self.agents.len()
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

    // === frameworks ===

    /// SUBSCRIBE, already validated at the call level. Answers on `conn`
    /// (SUBSCRIBED + HEARTBEAT, or a single ERROR and close).
    pub(crate) fn subscribe_framework(
        &mut self,
        conn: ConnId,
        stream_id: String,
        subscribe: call::Subscribe,
        principal: Option<&str>,
        now: Instant,
        wall: SystemTime,
    ) {
        let mut info = subscribe.framework_info;
        let refuse = |m: &mut Master, message: String| {
            let mut e =
                sched::Event { error: Some(event::Error { message }), ..Default::default() };
            e.set_type(event::Type::Error);
            m.out.push(Out::Scheduler(conn, e));
            m.out.push(Out::Close(conn));
        };
        if let Err(problem) = self.validate_framework(&info, &subscribe.suppressed_roles) {
            return refuse(self, problem);
        }
        if let (Some(p), Some(expected)) = (principal, info.principal.as_deref())
            && p != expected
        {
            return refuse(
                self,
                format!("Authenticated principal '{p}' does not match principal '{expected}'"),
            );
        }
        let requested = info.id.as_ref().map(|i| i.value.clone()).filter(|v| !v.is_empty());
        if let Some(id) = &requested
            && self.removed_framework_ids.contains(id)
        {
            return refuse(self, "Framework has been removed".into());
        }
        let caps = Caps::of(&info);
        let roles = if caps.multi_role {
            info.roles.clone()
        } else {
            vec![info.role.clone().unwrap_or_else(|| "*".into())]
        };
        let now_s = epoch_secs(wall);
        let id = match requested {
            Some(id) => id,
            None => {
                let id = format!("{}-{:04}", self.master_id(), self.next_framework);
                self.next_framework += 1;
                id
            }
        };
        info.id = Some(v1::FrameworkId { value: id.clone() });
        self.conns.insert(conn, Owner::Framework(id.clone()));
        let suppressed: BTreeSet<String> = subscribe.suppressed_roles.into_iter().collect();
        let added;
        if let Some(fw) = self.frameworks.get_mut(&id) {
            // Failover: the new subscription replaces the old one.
            if let Some(old) = fw.conn.take() {
                let mut e = sched::Event {
                    error: Some(event::Error { message: "Framework failed over".into() }),
                    ..Default::default()
                };
                e.set_type(event::Type::Error);
                self.out.push(Out::Scheduler(old, e));
                self.out.push(Out::Close(old));
                self.conns.remove(&old);
            } else {
                // Filters were dropped at disconnection already.
                fw.filters.clear();
            }
            if let Some(p) = &fw.info.principal
                && info.principal.as_ref() != Some(p)
            {
                self.conns.remove(&conn);
                return refuse(self, "Changing the framework's principal is not allowed".into());
            }
            // `user` and `checkpoint` cannot change on re-subscription.
            info.user = fw.info.user.clone();
            info.checkpoint = fw.info.checkpoint;
            // Roles leaving suppression get their filters cleared.
            for role in fw.suppressed.difference(&suppressed) {
                fw.filters.clear_role(role);
            }
            fw.info = info.clone();
            fw.caps = caps;
            fw.roles = roles;
            fw.suppressed = suppressed;
            fw.conn = Some(conn);
            fw.stream_id = Some(stream_id);
            fw.failover_deadline = None;
            fw.reregistered_time = Some(now_s);
            fw.last_heartbeat = now;
            added = false;
        } else {
            self.insert_disconnected_framework(id.clone(), info.clone(), now, now_s, None);
            if let Some(fw) = self.frameworks.get_mut(&id) {
                fw.suppressed = suppressed;
                fw.conn = Some(conn);
                fw.stream_id = Some(stream_id);
            }
            added = true;
        }
        self.registry_dirty = true;
        // Offers outstanding to the old subscription are discarded silently.
        let stale: Vec<String> = self.frameworks[&id].offers.iter().cloned().collect();
        for offer_id in stale {
            self.recover_offer(&offer_id, None, now);
        }
        let mut subscribed = sched::Event {
            subscribed: Some(event::Subscribed {
                framework_id: v1::FrameworkId { value: id.clone() },
                heartbeat_interval_seconds: Some(self.config.heartbeat_interval.as_secs_f64()),
                master_info: Some(self.config.info.clone()),
            }),
            ..Default::default()
        };
        subscribed.set_type(event::Type::Subscribed);
        self.out.push(Out::Scheduler(conn, subscribed));
        self.out.push(Out::Scheduler(conn, heartbeat()));
        // Agents resend what this framework has not acknowledged yet.
        let mut update = agent::Event {
            update_framework: Some(agent::event::UpdateFramework { framework_info: info.clone() }),
            ..Default::default()
        };
        update.set_type(agent::event::Type::UpdateFramework);
        let hosting: BTreeSet<String> = self
            .tasks
            .iter()
            .filter(|((f, _), _)| *f == id)
            .map(|(_, t)| t.task.agent_id.value.clone())
            .collect();
        for agent_id in hosting {
            self.send_agent(&agent_id, update.clone());
        }
        let view = self.framework_view(&id);
        let mut e = op::Event::default();
        if added {
            e.set_type(op::event::Type::FrameworkAdded);
            e.framework_added = view.map(|framework| op::event::FrameworkAdded { framework });
        } else {
            e.set_type(op::event::Type::FrameworkUpdated);
            e.framework_updated = view.map(|framework| op::event::FrameworkUpdated { framework });
        }
        self.broadcast_operator(e);
        self.allocation_wanted = true;
        tracing::info!(framework_id = %id, name = %info.name, failover = !added, "framework subscribed");
    }

    fn validate_framework(
        &self,
        info: &v1::FrameworkInfo,
        suppressed: &[String],
    ) -> Result<(), String> {
        let caps = Caps::of(info);
        if caps.multi_role {
            if info.role.is_some() {
                return Err(
                    "'FrameworkInfo.role' must not be set for a MULTI_ROLE framework".into()
                );
            }
            let mut seen = BTreeSet::new();
            for role in &info.roles {
                validate_role(role).map_err(|e| e.to_string())?;
                if !seen.insert(role) {
                    return Err(format!("'FrameworkInfo.roles' contains duplicate role '{role}'"));
                }
            }
        } else {
            if !info.roles.is_empty() {
                return Err(
                    "'FrameworkInfo.roles' must not be set without the MULTI_ROLE capability"
                        .into(),
                );
            }
            if let Some(role) = &info.role {
                validate_role(role).map_err(|e| e.to_string())?;
            }
        }
        if let Some(id) = info.id.as_ref().filter(|i| !i.value.is_empty()) {
            valid_id(&id.value).map_err(|e| format!("Invalid framework ID: {e}"))?;
        }
        if let Some(t) = info.failover_timeout
            && (!t.is_finite() || t < 0.0 || Duration::try_from_secs_f64(t).is_err())
        {
            return Err(format!("Invalid failover_timeout {t}"));
        }
        let roles: BTreeSet<&str> = if caps.multi_role {
            info.roles.iter().map(String::as_str).collect()
        } else {
            std::iter::once(info.role.as_deref().unwrap_or("*")).collect()
        };
        if let Some(bad) = suppressed.iter().find(|r| !roles.contains(r.as_str())) {
            return Err(format!("Suppressed role '{bad}' is not contained in the set of roles"));
        }
        Ok(())
    }

    /// Checks a non-SUBSCRIBE call's framework and stream, as Mesos orders them.
    pub(crate) fn authorize_call(
        &self,
        framework_id: &str,
        stream_id: Option<&str>,
    ) -> Result<(), Rejection> {
        let Some(fw) = self.frameworks.get(framework_id) else {
            return Err(Rejection::new(400, "Framework cannot be found"));
        };
        if !fw.connected() {
            return Err(Rejection::new(403, "Framework is not subscribed"));
        }
        match (stream_id, fw.stream_id.as_deref()) {
            (None, _) => Err(Rejection::new(
                400,
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
            )),
            (Some(given), Some(current)) if given != current => Err(Rejection::new(
                400,
                format!(
                    "The stream ID '{given}' included in this request didn't match the stream ID currently associated with framework ID {framework_id}"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Any scheduler call but SUBSCRIBE, after [`Self::authorize_call`].
    pub(crate) fn scheduler_call(&mut self, c: sched::Call, now: Instant, wall: SystemTime) {
        let fw_id = c.framework_id.as_ref().map(|f| f.value.clone()).unwrap_or_default();
        match c.r#type() {
            call::Type::Teardown => self.remove_framework(&fw_id, now, wall),
            call::Type::Accept => {
                if let Some(a) = c.accept {
                    self.accept(&fw_id, a, now, wall);
                }
            }
            call::Type::Decline => {
                if let Some(d) = c.decline {
                    let refuse = refuse_seconds(d.filters.as_ref());
                    for o in d.offer_ids {
                        if self.offers.get(&o.value).is_some_and(|rec| rec.framework_id == fw_id) {
                            self.recover_offer(&o.value, refuse, now);
                        }
                    }
                }
            }
            call::Type::Revive => {
                let roles = c.revive.map(|r| r.roles).unwrap_or_default();
                if let Some(fw) = self.frameworks.get_mut(&fw_id) {
                    if roles.iter().any(|r| !fw.roles.contains(r)) {
                        return; // An unknown role drops the whole call (still 202).
                    }
                    let roles = if roles.is_empty() { fw.roles.clone() } else { roles };
                    for role in &roles {
                        fw.suppressed.remove(role);
                        fw.filters.clear_role(role);
                    }
                    self.allocation_wanted = true;
                }
            }
            call::Type::Suppress => {
                let roles = c.suppress.map(|r| r.roles).unwrap_or_default();
                if let Some(fw) = self.frameworks.get_mut(&fw_id) {
                    if roles.iter().any(|r| !fw.roles.contains(r)) {
                        return;
                    }
                    let roles = if roles.is_empty() { fw.roles.clone() } else { roles };
                    fw.suppressed.extend(roles);
                }
            }
            call::Type::Kill => {
                if let Some(k) = c.kill {
                    self.kill(&fw_id, k, wall);
                }
            }
            call::Type::Shutdown => {
                if let Some(s) = c.shutdown {
                    let mut e = agent::Event {
                        shutdown_executor: Some(agent::event::ShutdownExecutor {
                            framework_id: v1::FrameworkId { value: fw_id.clone() },
                            executor_id: s.executor_id,
                        }),
                        ..Default::default()
                    };
                    e.set_type(agent::event::Type::ShutdownExecutor);
                    self.send_agent(&s.agent_id.value, e);
                }
            }
            call::Type::Acknowledge => {
                if let Some(a) = c.acknowledge {
                    self.acknowledge(&fw_id, a);
                }
            }
            call::Type::Reconcile => {
                let tasks = c.reconcile.map(|r| r.tasks).unwrap_or_default();
                self.reconcile(&fw_id, tasks, wall);
            }
            call::Type::Message => {
                if let Some(m) = c.message {
                    let mut e = agent::Event {
                        message: Some(agent::event::Message {
                            framework_id: v1::FrameworkId { value: fw_id.clone() },
                            executor_id: m.executor_id,
                            data: m.data,
                        }),
                        ..Default::default()
                    };
                    e.set_type(agent::event::Type::Message);
                    self.send_agent(&m.agent_id.value, e);
                }
            }
            call::Type::UpdateFramework => {}
            // REQUEST, inverse offers and operation calls are accepted and ignored.
            _ => {}
        }
    }

    fn framework_disconnected(&mut self, id: &str, conn: ConnId, now: Instant, wall: SystemTime) {
        let Some(fw) = self.frameworks.get_mut(id) else { return };
        if fw.conn != Some(conn) {
            return;
        }
        fw.conn = None;
        fw.stream_id = None;
        fw.filters.clear();
        fw.unregistered_time = Some(epoch_secs(wall));
        let timeout = fw.info.failover_timeout.unwrap_or(0.0);
        let offers: Vec<String> = fw.offers.iter().cloned().collect();
        for offer_id in offers {
            self.rescind(&offer_id, now);
        }
        tracing::info!(framework_id = %id, failover_timeout = timeout, "framework disconnected");
        if timeout <= 0.0 {
            self.remove_framework(id, now, wall);
        } else if let Some(fw) = self.frameworks.get_mut(id) {
            fw.failover_deadline = after(now, timeout);
        }
    }

    /// Removes a framework: its executors are shut down, its tasks killed.
    fn remove_framework(&mut self, id: &str, now: Instant, wall: SystemTime) {
        let Some(mut fw) = self.frameworks.remove(id) else { return };
        tracing::info!(framework_id = %id, "removing framework");
        if let Some(conn) = fw.conn.take() {
            self.conns.remove(&conn);
            self.out.push(Out::Close(conn));
        }
        for offer_id in std::mem::take(&mut fw.offers) {
            if let Some(rec) = self.offers.remove(&offer_id)
                && let Some(a) = self.agents.get_mut(&rec.agent_id)
            {
                a.offered.subtract(&rec.resources);
            }
        }
        let mut shutdown = agent::Event {
            shutdown_framework: Some(agent::event::ShutdownFramework {
                framework_id: v1::FrameworkId { value: id.into() },
            }),
            ..Default::default()
        };
        shutdown.set_type(agent::event::Type::ShutdownFramework);
        let keys: Vec<(String, String)> =
            self.tasks.keys().filter(|(f, _)| f == id).cloned().collect();
        let mut agents = BTreeSet::new();
        for key in keys {
            if let Some(mut t) = self.tasks.remove(&key) {
                agents.insert(t.task.agent_id.value.clone());
                if let Some(a) = self.agents.get_mut(&t.task.agent_id.value) {
                    a.used.subtract(&t.resources);
                }
                let status = self.master_status(
                    &key.1,
                    TaskState::TaskKilled,
                    Reason::FrameworkRemoved,
                    "Framework removed".into(),
                    Some(&t.task.agent_id.value),
                    wall,
                );
                t.task.set_state(TaskState::TaskKilled);
                t.task.statuses.push(status);
                self.complete_task(t.task);
            }
        }
        for a in self.agents.values_mut() {
            let execs: Vec<_> = a.executors.keys().filter(|(f, _)| f == id).cloned().collect();
            for k in execs {
                if let Some((_, res)) = a.executors.remove(&k) {
                    a.used.subtract(&res);
                }
                agents.insert(a.id().to_owned());
            }
        }
        for agent_id in agents {
            self.send_agent(&agent_id, shutdown.clone());
        }
        self.unreachable_tasks.retain(|(f, _), _| f != id);
        self.removed_framework_ids.insert(id.to_owned());
        self.registry_dirty = true;
        self.completed_frameworks.push(fw.info.clone());
        if self.completed_frameworks.len() > self.config.max_completed_frameworks {
            self.completed_frameworks.remove(0);
        }
        let mut e = op::Event {
            framework_removed: Some(op::event::FrameworkRemoved { framework_info: fw.info }),
            ..Default::default()
        };
        e.set_type(op::event::Type::FrameworkRemoved);
        self.broadcast_operator(e);
        self.allocation_wanted = true;
        let _ = now;
    }

    // === offers ===

    /// Returns an offer's resources to its agent; with `refuse`, installs a
    /// decline filter for them.
    fn recover_offer(&mut self, offer_id: &str, refuse: Option<Duration>, now: Instant) {
        let Some(rec) = self.offers.remove(offer_id) else { return };
        if let Some(a) = self.agents.get_mut(&rec.agent_id) {
            a.offered.subtract(&rec.resources);
        }
        if let Some(fw) = self.frameworks.get_mut(&rec.framework_id) {
            fw.offers.remove(offer_id);
            if let Some(alloc) = fw.allocated.get_mut(&rec.role) {
                alloc.subtract(&rec.resources);
            }
            if let Some(refuse) = refuse {
                fw.filters.add(
                    FilterKey { role: rec.role, agent_id: rec.agent_id },
                    rec.resources,
                    now + refuse,
                );
            }
        }
    }

    fn rescind(&mut self, offer_id: &str, now: Instant) {
        let Some(fw_id) = self.offers.get(offer_id).map(|r| r.framework_id.clone()) else { return };
        let mut e = sched::Event {
            rescind: Some(event::Rescind { offer_id: v1::OfferId { value: offer_id.into() } }),
            ..Default::default()
        };
        e.set_type(event::Type::Rescind);
        self.send_framework(&fw_id, e);
        self.recover_offer(offer_id, None, now);
    }

    /// One allocation run: every agent's free resources go, in weighted DRF
    /// order, to the first (framework, role) that may take them; each
    /// framework then gets one OFFERS event.
    pub(crate) fn allocate(&mut self, now: Instant) {
        self.allocation_wanted = false;
        let mut agent_ids: Vec<String> =
            self.agents.values().filter(|a| a.conn.is_some()).map(|a| a.id().to_owned()).collect();
        if agent_ids.is_empty() {
            return;
        }
        agent_ids.shuffle(&mut self.rng);
        let mut totals = Resources::default();
        for a in self.agents.values().filter(|a| a.conn.is_some()) {
            totals.add(&a.total);
        }
        let mut clients: Vec<Client> = Vec::new();
        for (id, fw) in &self.frameworks {
            if !fw.connected() {
                continue;
            }
            for role in &fw.roles {
                if fw.suppressed.contains(role) {
                    continue;
                }
                let allocated = fw.allocated.get(role).cloned().unwrap_or_default();
                clients.push(Client { framework_id: id.clone(), role: role.clone(), allocated });
            }
        }
        if clients.is_empty() {
            return;
        }
        let mut order = allocator::Order::new(clients, &totals, &self.config.weights);
        let mut new_offers: BTreeMap<String, Vec<v1::Offer>> = BTreeMap::new();
        for agent_id in agent_ids {
            let Some(agent) = self.agents.get(&agent_id) else { continue };
            let mut free = agent.free();
            if !is_allocatable(&free) {
                continue;
            }
            let has_gpus = agent.has_gpus();
            loop {
                let frameworks = &self.frameworks;
                let pick = order.first_eligible(|client| {
                    let fw = frameworks.get(&client.framework_id)?;
                    if has_gpus && !fw.caps.gpu {
                        return None;
                    }
                    let offerable = free.allocatable_to(&client.role);
                    if !is_allocatable(&offerable) {
                        return None;
                    }
                    let key = FilterKey { role: client.role.clone(), agent_id: agent_id.clone() };
                    if fw.filters.refuses(&key, &offerable, now) {
                        return None;
                    }
                    Some(offerable)
                });
                let Some((idx, offerable)) = pick else { break };
                let client = order.client(idx).clone();
                free.subtract(&offerable);
                order.charge(idx, &offerable, &totals);
                let offer =
                    self.make_offer(&client.framework_id, &client.role, &agent_id, offerable, now);
                new_offers.entry(client.framework_id).or_default().push(offer);
                if !is_allocatable(&free) {
                    break;
                }
            }
        }
        for (fw_id, offers) in new_offers {
            let mut e =
                sched::Event { offers: Some(event::Offers { offers }), ..Default::default() };
            e.set_type(event::Type::Offers);
            self.send_framework(&fw_id, e);
        }
    }

    fn make_offer(
        &mut self,
        fw_id: &str,
        role: &str,
        agent_id: &str,
        resources: Resources,
        now: Instant,
    ) -> v1::Offer {
        let id = format!("{}-O{}", self.master_id(), self.next_offer);
        self.next_offer += 1;
        let fw = self.frameworks.get_mut(fw_id).expect("allocation only picks known frameworks");
        let agent = self.agents.get_mut(agent_id).expect("allocation only picks known agents");
        agent.offered.add(&resources);
        fw.allocated.entry(role.to_owned()).or_default().add(&resources);
        fw.offers.insert(id.clone());
        let alloc_role = fw.alloc_role(role);
        let executor_ids = agent
            .executors
            .keys()
            .filter(|(f, _)| f == fw_id)
            .map(|(_, e)| v1::ExecutorId { value: e.clone() })
            .collect();
        let address = v1::Address {
            hostname: Some(agent.info.hostname.clone()),
            ip: Some(agent.info.hostname.clone()),
            port: agent.info.port.unwrap_or(5051),
        };
        let offer = v1::Offer {
            id: v1::OfferId { value: id.clone() },
            framework_id: v1::FrameworkId { value: fw_id.into() },
            agent_id: v1::AgentId { value: agent_id.into() },
            hostname: agent.info.hostname.clone(),
            resources: resources_to_proto(
                &alloc_role.map_or_else(|| resources.clone(), |role| resources.allocated_to(role)),
                Format::for_framework(fw.caps.refinement),
            ),
            executor_ids,
            attributes: agent.info.attributes.clone(),
            url: Some(v1::Url {
                scheme: "http".into(),
                address,
                path: Some("/slave(1)".into()),
                query: vec![],
                fragment: None,
            }),
            allocation_info: alloc_role
                .map(|r| v1::resource::AllocationInfo { role: Some(r.into()) }),
            domain: agent.info.domain.clone(),
            unavailability: None,
        };
        self.offers.insert(
            id,
            OfferRec {
                framework_id: fw_id.into(),
                agent_id: agent_id.into(),
                role: role.into(),
                resources,
                created: now,
            },
        );
        offer
    }

    // === ACCEPT ===

    fn accept(&mut self, fw_id: &str, accept: call::Accept, now: Instant, wall: SystemTime) {
        let refuse = refuse_seconds(accept.filters.as_ref());
        let launched_tasks: Vec<(String, Option<String>)> = accept
            .operations
            .iter()
            .flat_map(|op| {
                let mut ids = Vec::new();
                if let Some(l) = &op.launch {
                    ids.extend(
                        l.task_infos
                            .iter()
                            .map(|t| (t.task_id.value.clone(), Some(t.agent_id.value.clone()))),
                    );
                }
                if let Some(g) = &op.launch_group {
                    ids.extend(
                        g.task_group
                            .tasks
                            .iter()
                            .map(|t| (t.task_id.value.clone(), Some(t.agent_id.value.clone()))),
                    );
                }
                ids
            })
            .collect();
        if let Err(problem) = self.validate_offers(fw_id, &accept.offer_ids) {
            let pa = self.frameworks.get(fw_id).is_some_and(|f| f.caps.partition_aware);
            let state = if pa { TaskState::TaskDropped } else { TaskState::TaskLost };
            for (task_id, agent_id) in launched_tasks {
                let s = self.master_status(
                    &task_id,
                    state,
                    Reason::InvalidOffers,
                    format!("Task launched with invalid offers: {problem}"),
                    agent_id.as_deref(),
                    wall,
                );
                self.send_framework(fw_id, Self::update_event(s));
            }
            // Still-valid offers of the call go back without a filter.
            for o in &accept.offer_ids {
                if self.offers.get(&o.value).is_some_and(|r| r.framework_id == fw_id) {
                    self.recover_offer(&o.value, None, now);
                }
            }
            return;
        }
        // Take the offers: their resources form the pool the operations use.
        let mut pool = Resources::default();
        let mut agent_id = String::new();
        let mut role = String::new();
        for o in &accept.offer_ids {
            if let Some(rec) = self.offers.remove(&o.value) {
                pool.add(&rec.resources);
                agent_id = rec.agent_id;
                role = rec.role;
                if let Some(a) = self.agents.get_mut(&agent_id) {
                    a.offered.subtract(&rec.resources);
                }
                if let Some(fw) = self.frameworks.get_mut(fw_id) {
                    fw.offers.remove(&o.value);
                    if let Some(alloc) = fw.allocated.get_mut(&role) {
                        alloc.subtract(&rec.resources);
                    }
                }
            }
        }
        let mut launched_executors: BTreeSet<String> = BTreeSet::new();
        for operation in accept.operations {
            match operation.r#type() {
                v1::offer::operation::Type::Launch => {
                    let Some(launch) = operation.launch else { continue };
                    for task in launch.task_infos {
                        let id_set = operation.id.is_some();
                        match self.validate_task(
                            fw_id,
                            &agent_id,
                            &task,
                            None,
                            id_set,
                            &launched_executors,
                        ) {
                            Ok(needed) if pool.contains(&needed) => {
                                pool.subtract(&needed);
                                if let Some(e) = &task.executor {
                                    launched_executors.insert(e.executor_id.value.clone());
                                }
                                self.launch(fw_id, &agent_id, &role, task, None, needed, wall);
                            }
                            Ok(needed) => {
                                let msg = format!(
                                    "Task uses more resources {needed} than available {pool}"
                                );
                                self.task_error(
                                    fw_id,
                                    &agent_id,
                                    &task.task_id.value,
                                    Reason::TaskInvalid,
                                    msg,
                                    wall,
                                );
                            }
                            Err(msg) => self.task_error(
                                fw_id,
                                &agent_id,
                                &task.task_id.value,
                                Reason::TaskInvalid,
                                msg,
                                wall,
                            ),
                        }
                    }
                }
                v1::offer::operation::Type::LaunchGroup => {
                    let Some(group) = operation.launch_group else { continue };
                    let id_set = operation.id.is_some();
                    match self.validate_group(fw_id, &agent_id, &group, id_set, &launched_executors)
                    {
                        Ok(needed) if pool.contains(&needed) => {
                            pool.subtract(&needed);
                            launched_executors.insert(group.executor.executor_id.value.clone());
                            self.launch_group(fw_id, &agent_id, &role, group, needed, wall);
                        }
                        Ok(_) => {
                            for t in &group.task_group.tasks {
                                self.task_error(
                                    fw_id,
                                    &agent_id,
                                    &t.task_id.value,
                                    Reason::TaskGroupInvalid,
                                    "Task group uses more resources than available".into(),
                                    wall,
                                );
                            }
                        }
                        Err(msg) => {
                            for t in &group.task_group.tasks {
                                self.task_error(
                                    fw_id,
                                    &agent_id,
                                    &t.task_id.value,
                                    Reason::TaskGroupInvalid,
                                    msg.clone(),
                                    wall,
                                );
                            }
                        }
                    }
                }
                other => {
                    tracing::warn!(framework_id = %fw_id, operation = ?other, "offer operation not supported by km mesos-master; ignored");
                }
            }
        }
        // The rest goes back to the agent, refused for a while.
        if !pool.is_empty()
            && let Some(fw) = self.frameworks.get_mut(fw_id)
            && let Some(refuse) = refuse
        {
            fw.filters.add(FilterKey { role, agent_id }, pool, now + refuse);
        }
    }

    fn validate_offers(&self, fw_id: &str, offer_ids: &[v1::OfferId]) -> Result<(), String> {
        if offer_ids.is_empty() {
            return Err("No offers specified".into());
        }
        let mut seen = BTreeSet::new();
        let mut agent: Option<&str> = None;
        let mut role: Option<&str> = None;
        for o in offer_ids {
            if !seen.insert(&o.value) {
                return Err(format!("Duplicate offer {} in the same call", o.value));
            }
            let Some(rec) = self.offers.get(&o.value) else {
                return Err(format!("Offer {} is no longer valid", o.value));
            };
            if rec.framework_id != fw_id {
                return Err(format!("Offer {} has invalid framework", o.value));
            }
            if agent.is_some_and(|a| a != rec.agent_id) {
                return Err("Aggregated offers must belong to one single agent".into());
            }
            if role.is_some_and(|r| r != rec.role) {
                return Err("Aggregated offers must be allocated to the same role".into());
            }
            agent = Some(&rec.agent_id);
            role = Some(&rec.role);
        }
        Ok(())
    }

    /// Validates one task; returns the resources it needs (its own plus its
    /// executor's when that executor is not running yet).
    fn validate_task(
        &self,
        fw_id: &str,
        agent_id: &str,
        task: &v1::TaskInfo,
        group_executor: Option<&v1::ExecutorInfo>,
        operation_id_set: bool,
        launched_executors: &BTreeSet<String>,
    ) -> Result<Resources, String> {
        if operation_id_set {
            return Err("The 'id' field was set in the offer operation; operation feedback is not supported for LAUNCH".into());
        }
        valid_id(&task.task_id.value).map_err(|e| format!("Task ID is invalid: {e}"))?;
        let key = (fw_id.to_owned(), task.task_id.value.clone());
        if self.tasks.contains_key(&key) || self.unreachable_tasks.contains_key(&key) {
            return Err(format!("Task has duplicate ID: {}", task.task_id.value));
        }
        if task.agent_id.value != agent_id {
            return Err(format!("Task uses invalid agent: {}", task.agent_id.value));
        }
        if task.resources.is_empty() {
            return Err("Task uses no resources".into());
        }
        let mut needed =
            bag(&task.resources).map_err(|e| format!("Task uses invalid resources: {e}"))?;
        if let Some(kp) = &task.kill_policy
            && kp.grace_period.as_ref().is_some_and(|g| g.nanoseconds < 0)
        {
            return Err("Task's 'kill_policy.grace_period' must be non-negative".into());
        }
        if group_executor.is_some() {
            if task.command.is_none() && task.container.is_none() {
                // Group tasks may run without a command only with a container image.
            }
            return Ok(needed);
        }
        match (&task.command, &task.executor) {
            (Some(_), Some(_)) => return Err("Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".into()),
            (None, None) => return Err("Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".into()),
            (Some(_), None) => {}
            (None, Some(executor)) => {
                if !matches!(executor.r#type(), v1::executor_info::Type::Unknown | v1::executor_info::Type::Custom) {
                    return Err("'ExecutorInfo.type' must be 'CUSTOM' for LAUNCH".into());
                }
                if executor.command.is_none() {
                    return Err("'ExecutorInfo.command' must be set for a CUSTOM executor".into());
                }
                valid_id(&executor.executor_id.value).map_err(|e| format!("Executor ID is invalid: {e}"))?;
                let running = self.agents.get(agent_id).and_then(|a| a.executors.get(&(fw_id.to_owned(), executor.executor_id.value.clone())));
                match running {
                    Some((info, _)) => {
                        if !same_executor(info, executor, fw_id) {
                            return Err(format!(
                                "ExecutorInfo is not compatible with the running executor {}",
                                executor.executor_id.value
                            ));
                        }
                    }
                    None if launched_executors.contains(&executor.executor_id.value) => {}
                    None => {
                        let exec_res = bag(&executor.resources)
                            .map_err(|e| format!("Executor uses invalid resources: {e}"))?;
                        needed.add(&exec_res);
                    }
                }
            }
        }
        Ok(needed)
    }

    fn validate_group(
        &self,
        fw_id: &str,
        agent_id: &str,
        group: &v1::offer::operation::LaunchGroup,
        operation_id_set: bool,
        launched_executors: &BTreeSet<String>,
    ) -> Result<Resources, String> {
        let executor = &group.executor;
        if executor.r#type() == v1::executor_info::Type::Unknown {
            return Err("'ExecutorInfo.type' must be set for LAUNCH_GROUP".into());
        }
        if executor.r#type() == v1::executor_info::Type::Default && executor.command.is_some() {
            return Err("'ExecutorInfo.command' must not be set for a DEFAULT executor".into());
        }
        if group.task_group.tasks.is_empty() {
            return Err("Task group is empty".into());
        }
        let mut needed = Resources::default();
        let mut ids = BTreeSet::new();
        for t in &group.task_group.tasks {
            if !ids.insert(&t.task_id.value) {
                return Err(format!("Task group has duplicate task ID {}", t.task_id.value));
            }
            if let Some(e) = &t.executor
                && e.executor_id != executor.executor_id
            {
                return Err("A task in the group has an executor different from the group's".into());
            }
            needed.add(&self.validate_task(
                fw_id,
                agent_id,
                t,
                Some(executor),
                operation_id_set,
                launched_executors,
            )?);
        }
        let key = (fw_id.to_owned(), executor.executor_id.value.clone());
        let running = self.agents.get(agent_id).is_some_and(|a| a.executors.contains_key(&key));
        if !running && !launched_executors.contains(&executor.executor_id.value) {
            needed.add(
                &bag(&executor.resources)
                    .map_err(|e| format!("Executor uses invalid resources: {e}"))?,
            );
        }
        Ok(needed)
    }

    fn task_error(
        &mut self,
        fw_id: &str,
        agent_id: &str,
        task_id: &str,
        reason: Reason,
        message: String,
        wall: SystemTime,
    ) {
        tracing::debug!(framework_id = %fw_id, task_id, %message, "task refused");
        let s = self.master_status(
            task_id,
            TaskState::TaskError,
            reason,
            message,
            Some(agent_id),
            wall,
        );
        self.send_framework(fw_id, Self::update_event(s));
    }

    fn with_allocation(
        &self,
        fw_id: &str,
        role: &str,
        resources: &[v1::Resource],
    ) -> Vec<v1::Resource> {
        let multi = self.frameworks.get(fw_id).is_some_and(|f| f.caps.multi_role);
        resources
            .iter()
            .cloned()
            .map(|mut r| {
                if multi && r.allocation_info.is_none() {
                    r.allocation_info =
                        Some(v1::resource::AllocationInfo { role: Some(role.into()) });
                }
                r
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        &mut self,
        fw_id: &str,
        agent_id: &str,
        role: &str,
        mut task: v1::TaskInfo,
        _group: Option<()>,
        needed: Resources,
        wall: SystemTime,
    ) {
        task.resources = self.with_allocation(fw_id, role, &task.resources);
        let mut executor_id = None;
        if let Some(executor) = task.executor.as_mut() {
            if executor.framework_id.is_none() {
                executor.framework_id = Some(v1::FrameworkId { value: fw_id.into() });
            }
            executor.resources = self.with_allocation(fw_id, role, &executor.resources);
            executor_id = Some(executor.executor_id.clone());
            let key = (fw_id.to_owned(), executor.executor_id.value.clone());
            if let Some(a) = self.agents.get_mut(agent_id)
                && !a.executors.contains_key(&key)
            {
                let res = bag(&executor.resources).unwrap_or_default();
                a.executors.insert(key, (executor.clone(), res));
            }
        }
        let task_res = bag(&task.resources).unwrap_or_default();
        self.record_task(fw_id, agent_id, role, &task, executor_id, task_res, needed, wall);
        let Some(info) = self.frameworks.get(fw_id).map(|f| f.info.clone()) else { return };
        let mut e = agent::Event {
            run_task: Some(agent::event::RunTask { framework_info: info, task }),
            ..Default::default()
        };
        e.set_type(agent::event::Type::RunTask);
        self.send_agent(agent_id, e);
    }

    fn launch_group(
        &mut self,
        fw_id: &str,
        agent_id: &str,
        role: &str,
        mut group: v1::offer::operation::LaunchGroup,
        needed: Resources,
        wall: SystemTime,
    ) {
        let executor = &mut group.executor;
        if executor.framework_id.is_none() {
            executor.framework_id = Some(v1::FrameworkId { value: fw_id.into() });
        }
        executor.resources = self.with_allocation(fw_id, role, &executor.resources);
        let key = (fw_id.to_owned(), executor.executor_id.value.clone());
        if let Some(a) = self.agents.get_mut(agent_id)
            && !a.executors.contains_key(&key)
        {
            let res = bag(&executor.resources).unwrap_or_default();
            a.executors.insert(key, (executor.clone(), res));
        }
        let executor_id = group.executor.executor_id.clone();
        // The whole group's resources are accounted to the agent once.
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.used.add(&needed);
        }
        for task in &mut group.task_group.tasks {
            task.resources = self.with_allocation(fw_id, role, &task.resources);
            let res = bag(&task.resources).unwrap_or_default();
            self.record_task(
                fw_id,
                agent_id,
                role,
                task,
                Some(executor_id.clone()),
                res,
                Resources::default(),
                wall,
            );
        }
        let Some(info) = self.frameworks.get(fw_id).map(|f| f.info.clone()) else { return };
        let mut e = agent::Event {
            run_task_group: Some(agent::event::RunTaskGroup {
                framework_info: info,
                executor: group.executor,
                task_group: group.task_group,
            }),
            ..Default::default()
        };
        e.set_type(agent::event::Type::RunTaskGroup);
        self.send_agent(agent_id, e);
    }

    #[allow(clippy::too_many_arguments)]
    fn record_task(
        &mut self,
        fw_id: &str,
        agent_id: &str,
        role: &str,
        info: &v1::TaskInfo,
        executor_id: Option<v1::ExecutorId>,
        task_res: Resources,
        needed: Resources,
        wall: SystemTime,
    ) {
        let _ = wall;
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.used.add(&needed);
        }
        if let Some(fw) = self.frameworks.get_mut(fw_id) {
            fw.allocated.entry(role.to_owned()).or_default().add(&needed);
        }
        let mut task = v1::Task {
            name: info.name.clone(),
            task_id: info.task_id.clone(),
            framework_id: v1::FrameworkId { value: fw_id.into() },
            executor_id,
            agent_id: v1::AgentId { value: agent_id.into() },
            resources: info.resources.clone(),
            labels: info.labels.clone(),
            discovery: info.discovery.clone(),
            container: info.container.clone(),
            user: self.frameworks.get(fw_id).map(|f| f.info.user.clone()),
            health_check: info.health_check.clone(),
            kill_policy: info.kill_policy,
            limits: info.limits.clone(),
            ..Default::default()
        };
        task.set_state(TaskState::TaskStaging);
        let mut e = op::Event {
            task_added: Some(op::event::TaskAdded { task: task.clone() }),
            ..Default::default()
        };
        e.set_type(op::event::Type::TaskAdded);
        self.broadcast_operator(e);
        // `needed` may include the executor; the task itself gives back only its own.
        self.tasks.insert(
            (fw_id.to_owned(), info.task_id.value.clone()),
            Task { task, resources: task_res, terminal_uuid: None },
        );
    }

    fn kill(&mut self, fw_id: &str, k: call::Kill, wall: SystemTime) {
        let key = (fw_id.to_owned(), k.task_id.value.clone());
        match self.tasks.get(&key) {
            Some(t) => {
                if let Some(given) = &k.agent_id
                    && given.value != t.task.agent_id.value
                {
                    return; // Wrong agent for a known task: ignored.
                }
                let agent_id = t.task.agent_id.value.clone();
                let mut e = agent::Event {
                    kill_task: Some(agent::event::KillTask {
                        framework_id: v1::FrameworkId { value: fw_id.into() },
                        task_id: k.task_id,
                        kill_policy: k.kill_policy,
                    }),
                    ..Default::default()
                };
                e.set_type(agent::event::Type::KillTask);
                self.send_agent(&agent_id, e);
            }
            None => self.reconcile(
                fw_id,
                vec![call::reconcile::Task { task_id: k.task_id, agent_id: k.agent_id }],
                wall,
            ),
        }
    }

    fn acknowledge(&mut self, fw_id: &str, a: call::Acknowledge) {
        let key = (fw_id.to_owned(), a.task_id.value.clone());
        let retire = self
            .tasks
            .get(&key)
            .is_some_and(|t| t.terminal_uuid.as_deref() == Some(a.uuid.as_slice()));
        let mut e = agent::Event {
            acknowledge: Some(agent::event::Acknowledge {
                framework_id: v1::FrameworkId { value: fw_id.into() },
                task_id: a.task_id,
                uuid: a.uuid,
            }),
            ..Default::default()
        };
        e.set_type(agent::event::Type::Acknowledge);
        self.send_agent(&a.agent_id.value, e);
        if retire && let Some(t) = self.tasks.remove(&key) {
            self.complete_task(t.task);
        }
    }

    fn complete_task(&mut self, task: v1::Task) {
        self.completed_tasks.push_back(task);
        while self.completed_tasks.len() > self.config.max_completed_tasks {
            self.completed_tasks.pop_front();
        }
    }

    fn reconcile(&mut self, fw_id: &str, tasks: Vec<call::reconcile::Task>, wall: SystemTime) {
        let pa = self.frameworks.get(fw_id).is_some_and(|f| f.caps.partition_aware);
        let mut answers = Vec::new();
        let status_of = |t: &Task, ts: f64| {
            let mut s = t.task.statuses.last().cloned().unwrap_or_else(|| v1::TaskStatus {
                task_id: t.task.task_id.clone(),
                ..Default::default()
            });
            let state = t
                .task
                .status_update_state
                .map(|_| t.task.status_update_state())
                .unwrap_or(t.task.state());
            s.set_state(state);
            s.agent_id = Some(t.task.agent_id.clone());
            s.executor_id = t.task.executor_id.clone();
            s.uuid = None;
            s.timestamp = Some(ts);
            s
        };
        let ts = epoch_secs(wall);
        if tasks.is_empty() {
            for ((f, _), t) in &self.tasks {
                if f == fw_id {
                    answers.push(status_of(t, ts));
                }
            }
        } else {
            for rt in tasks {
                let key = (fw_id.to_owned(), rt.task_id.value.clone());
                if let Some(t) = self.tasks.get(&key) {
                    answers.push(status_of(t, ts));
                    continue;
                }
                let agent = rt.agent_id.as_ref().map(|a| a.value.as_str());
                // After a master restart the truth is on agents not yet back: say nothing.
                let pending_recovery = match agent {
                    Some(a) => self.recovered.contains_key(a),
                    None => !self.recovered.is_empty(),
                };
                if pending_recovery {
                    continue;
                }
                let (state, unreachable_time) = match agent {
                    Some(a) if self.agents.contains_key(a) => {
                        (if pa { TaskState::TaskGone } else { TaskState::TaskLost }, None)
                    }
                    Some(a) if self.gone.contains(a) => {
                        (if pa { TaskState::TaskGoneByOperator } else { TaskState::TaskLost }, None)
                    }
                    Some(a) if self.unreachable.contains_key(a) => {
                        let when = self.unreachable[a].1;
                        (
                            if pa { TaskState::TaskUnreachable } else { TaskState::TaskLost },
                            Some(v1::TimeInfo { nanoseconds: (when * 1e9) as i64 }),
                        )
                    }
                    _ => (if pa { TaskState::TaskUnknown } else { TaskState::TaskLost }, None),
                };
                let mut s = v1::TaskStatus {
                    task_id: rt.task_id,
                    agent_id: rt.agent_id,
                    timestamp: Some(ts),
                    unreachable_time,
                    ..Default::default()
                };
                s.set_state(state);
                answers.push(s);
            }
        }
        for mut s in answers {
            s.set_source(Source::Master);
            s.set_reason(Reason::Reconciliation);
            s.message = Some("Reconciliation: Latest task state".into());
            self.send_framework(fw_id, Self::update_event(s));
        }
    }

    // === agents ===

    /// An agent registers or re-registers on `conn`.
    pub(crate) fn subscribe_agent(
        &mut self,
        conn: ConnId,
        subscribe: agent::call::Subscribe,
        now: Instant,
        wall: SystemTime,
    ) -> Result<String, Rejection> {
        let mut info = subscribe.agent_info;
        let total = bag(&info.resources)
            .map_err(|e| Rejection::new(400, format!("Invalid agent resources: {e}")))?;
        let now_s = epoch_secs(wall);
        let requested = info.id.as_ref().map(|i| i.value.clone()).filter(|v| !v.is_empty());
        if let Some(id) = &requested
            && self.gone.contains(id)
        {
            return Err(Rejection::new(403, format!("Agent {id} has been marked gone")));
        }
        let id = match requested {
            Some(id) => id,
            None => {
                let id = format!("{}-S{}", self.master_id(), self.next_agent);
                self.next_agent += 1;
                id
            }
        };
        info.id = Some(v1::AgentId { value: id.clone() });
        // An agent reconnecting replaces its old stream.
        if let Some(old) = self.agents.get(&id).and_then(|a| a.conn) {
            self.conns.remove(&old);
            self.out.push(Out::Close(old));
        }
        let returning = self.agents.contains_key(&id)
            || self.unreachable.remove(&id).is_some()
            || self.recovered.remove(&id).is_some();
        self.registry_dirty = true;
        let mut agent = Agent {
            info: info.clone(),
            total,
            used: Resources::default(),
            offered: Resources::default(),
            conn: Some(conn),
            disconnected_at: None,
            capabilities: subscribe.capabilities,
            version: subscribe.version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            registered_time: now_s,
            reregistered_time: None,
            executors: BTreeMap::new(),
        };
        if let Some(old) = self.agents.remove(&id) {
            agent.registered_time = old.registered_time;
            agent.reregistered_time = Some(now_s);
            agent.executors = old.executors;
            agent.used = old.used;
            // Offers on the old connection were rescinded at disconnection.
        }
        self.agents.insert(id.clone(), agent);
        self.conns.insert(conn, Owner::Agent(id.clone()));
        // What the agent reports it runs becomes known again (e.g. after a master restart).
        for fw_info in &subscribe.frameworks {
            let Some(fw_id) = fw_info.id.as_ref().map(|f| f.value.clone()) else { continue };
            if !self.frameworks.contains_key(&fw_id) && !self.removed_framework_ids.contains(&fw_id)
            {
                self.insert_disconnected_framework(fw_id, fw_info.clone(), now, now_s, None);
            }
        }
        for ex in &subscribe.executors {
            let fw = ex.framework_id.as_ref().map(|f| f.value.clone()).unwrap_or_default();
            let key = (fw, ex.executor_id.value.clone());
            let res = bag(&ex.resources).unwrap_or_default();
            if let Some(a) = self.agents.get_mut(&id)
                && !a.executors.contains_key(&key)
            {
                a.used.add(&res);
                a.executors.insert(key, (ex.clone(), res));
            }
        }
        for t in subscribe.tasks {
            let key = (t.framework_id.value.clone(), t.task_id.value.clone());
            self.unreachable_tasks.remove(&key);
            if self.tasks.contains_key(&key) || is_terminal(t.state()) {
                continue;
            }
            let res = bag(&t.resources).unwrap_or_default();
            if let Some(a) = self.agents.get_mut(&id) {
                a.used.add(&res);
            }
            self.tasks.insert(key, Task { task: t, resources: res, terminal_uuid: None });
        }
        let mut registered = agent::Event {
            registered: Some(agent::event::Registered {
                agent_id: v1::AgentId { value: id.clone() },
                master_info: self.config.info.clone(),
                heartbeat_interval_seconds: Some(self.config.heartbeat_interval.as_secs_f64()),
            }),
            ..Default::default()
        };
        registered.set_type(agent::event::Type::Registered);
        self.out.push(Out::Agent(conn, registered));
        if let Some(view) = self.agent_view(&id) {
            let mut e = op::Event {
                agent_added: Some(op::event::AgentAdded { agent: view }),
                ..Default::default()
            };
            e.set_type(op::event::Type::AgentAdded);
            self.broadcast_operator(e);
        }
        self.allocation_wanted = true;
        tracing::info!(agent_id = %id, hostname = %info.hostname, returning, "agent registered");
        Ok(id)
    }

    /// A call from a registered agent.
    pub(crate) fn agent_call(
        &mut self,
        c: agent::Call,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), Rejection> {
        let agent_id = c.agent_id.as_ref().map(|a| a.value.clone()).unwrap_or_default();
        if !self.agents.contains_key(&agent_id) {
            return Err(Rejection::new(400, format!("Agent {agent_id} is not registered")));
        }
        match c.r#type() {
            agent::call::Type::StatusUpdate => {
                let u = c.status_update.ok_or_else(|| {
                    Rejection::new(400, "Expecting 'status_update' to be present")
                })?;
                self.status_update(&agent_id, &u.framework_id.value, u.status, now, wall);
            }
            agent::call::Type::ExecutorExited => {
                let x = c.executor_exited.ok_or_else(|| {
                    Rejection::new(400, "Expecting 'executor_exited' to be present")
                })?;
                let key = (x.framework_id.value.clone(), x.executor_id.value.clone());
                if let Some(a) = self.agents.get_mut(&agent_id)
                    && let Some((_, res)) = a.executors.remove(&key)
                {
                    a.used.subtract(&res);
                    if let Some(fw) = self.frameworks.get_mut(&key.0) {
                        for alloc in fw.allocated.values_mut() {
                            alloc.subtract(&res);
                        }
                    }
                }
                let mut e = sched::Event {
                    failure: Some(event::Failure {
                        agent_id: Some(v1::AgentId { value: agent_id.clone() }),
                        executor_id: Some(x.executor_id),
                        status: x.status,
                    }),
                    ..Default::default()
                };
                e.set_type(event::Type::Failure);
                self.send_framework(&key.0, e);
            }
            agent::call::Type::Message => {
                let m = c
                    .message
                    .ok_or_else(|| Rejection::new(400, "Expecting 'message' to be present"))?;
                let mut e = sched::Event {
                    message: Some(event::Message {
                        agent_id: v1::AgentId { value: agent_id.clone() },
                        executor_id: m.executor_id,
                        data: m.data,
                    }),
                    ..Default::default()
                };
                e.set_type(event::Type::Message);
                self.send_framework(&m.framework_id.value, e);
            }
            agent::call::Type::Unregister => self.remove_agent(&agent_id, now, wall),
            other => return Err(Rejection::new(400, format!("Unexpected call type {other:?}"))),
        }
        Ok(())
    }

    fn status_update(
        &mut self,
        agent_id: &str,
        fw_id: &str,
        mut status: v1::TaskStatus,
        now: Instant,
        wall: SystemTime,
    ) {
        let key = (fw_id.to_owned(), status.task_id.value.clone());
        status.agent_id = Some(v1::AgentId { value: agent_id.into() });
        if status.timestamp.is_none() {
            status.timestamp = Some(epoch_secs(wall));
        }
        let state = status.state();
        let connected = self.frameworks.get(fw_id).is_some_and(Framework::connected);
        if let Some(t) = self.tasks.get_mut(&key) {
            if status.executor_id.is_none() {
                status.executor_id = t.task.executor_id.clone();
            }
            let was_terminal = is_terminal(t.task.state());
            t.task.set_state(state);
            t.task.statuses.push(status.clone());
            if t.task.statuses.len() > 8 {
                t.task.statuses.remove(0);
            }
            if connected {
                t.task.set_status_update_state(state);
                t.task.status_update_uuid = status.uuid.clone();
            }
            if is_terminal(state) && !was_terminal {
                t.terminal_uuid = status.uuid.clone();
                let res = t.resources.clone();
                if let Some(a) = self.agents.get_mut(agent_id) {
                    a.used.subtract(&res);
                }
                if let Some(fw) = self.frameworks.get_mut(fw_id) {
                    for alloc in fw.allocated.values_mut() {
                        alloc.subtract(&res);
                    }
                }
                if status.uuid.is_none()
                    && let Some(t) = self.tasks.remove(&key)
                {
                    self.complete_task(t.task);
                }
            }
        }
        let mut e = op::Event {
            task_updated: Some(op::event::TaskUpdated {
                framework_id: v1::FrameworkId { value: fw_id.into() },
                status: status.clone(),
                state: state as i32,
            }),
            ..Default::default()
        };
        e.set_type(op::event::Type::TaskUpdated);
        self.broadcast_operator(e);
        // Updates for a disconnected framework are dropped; the agent retries.
        self.send_framework(fw_id, Self::update_event(status));
        let _ = now;
    }

    fn agent_disconnected(&mut self, id: &str, conn: ConnId, now: Instant, wall: SystemTime) {
        let Some(agent) = self.agents.get_mut(id) else { return };
        if agent.conn != Some(conn) {
            return;
        }
        agent.conn = None;
        agent.disconnected_at = Some(now);
        tracing::warn!(agent_id = %id, "agent disconnected");
        self.rescind_agent_offers(id, now);
        // Frameworks that do not checkpoint lose their tasks on it at once.
        let lost: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|((f, _), t)| {
                t.task.agent_id.value == id
                    && !self.frameworks.get(f).is_some_and(|fw| fw.info.checkpoint.unwrap_or(false))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (fw_id, task_id) in lost {
            self.lose_task(
                &fw_id,
                &task_id,
                TaskState::TaskLost,
                Reason::AgentDisconnected,
                "Agent disconnected",
                wall,
                false,
            );
        }
    }

    /// Removes a task with a master-generated terminal (or unreachable) state.
    #[allow(clippy::too_many_arguments)]
    fn lose_task(
        &mut self,
        fw_id: &str,
        task_id: &str,
        state: TaskState,
        reason: Reason,
        message: &str,
        wall: SystemTime,
        unreachable: bool,
    ) {
        let key = (fw_id.to_owned(), task_id.to_owned());
        let Some(mut t) = self.tasks.remove(&key) else { return };
        let agent_id = t.task.agent_id.value.clone();
        if let Some(a) = self.agents.get_mut(&agent_id) {
            a.used.subtract(&t.resources);
        }
        if let Some(fw) = self.frameworks.get_mut(fw_id) {
            for alloc in fw.allocated.values_mut() {
                alloc.subtract(&t.resources);
            }
        }
        let mut s =
            self.master_status(task_id, state, reason, message.into(), Some(&agent_id), wall);
        if unreachable {
            s.unreachable_time =
                Some(v1::TimeInfo { nanoseconds: (epoch_secs(wall) * 1e9) as i64 });
        }
        s.executor_id = t.task.executor_id.clone();
        t.task.set_state(state);
        t.task.statuses.push(s.clone());
        if state == TaskState::TaskUnreachable {
            self.unreachable_tasks.insert(key, t.task);
        } else {
            self.complete_task(t.task);
        }
        self.send_framework(fw_id, Self::update_event(s));
    }

    /// Rescinds every outstanding offer of an agent.
    fn rescind_agent_offers(&mut self, agent_id: &str, now: Instant) {
        let offers: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.agent_id == agent_id)
            .map(|(k, _)| k.clone())
            .collect();
        for offer_id in offers {
            self.rescind(&offer_id, now);
        }
    }

    /// Ends every task on an agent with a master-generated update:
    /// `pa_state` for PARTITION_AWARE frameworks, TASK_LOST for the others.
    fn lose_agent_tasks(
        &mut self,
        agent_id: &str,
        pa_state: TaskState,
        reason: Reason,
        message: &str,
        wall: SystemTime,
        unreachable: bool,
    ) {
        let keys: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.task.agent_id.value == agent_id)
            .map(|(k, _)| k.clone())
            .collect();
        for (fw_id, task_id) in keys {
            let pa = self.frameworks.get(&fw_id).is_some_and(|f| f.caps.partition_aware);
            let state = if pa { pa_state } else { TaskState::TaskLost };
            self.lose_task(&fw_id, &task_id, state, reason, message, wall, unreachable);
        }
    }

    /// Operator MARK_AGENT_GONE: the agent is gone for good. Its tasks end as
    /// TASK_GONE_BY_OPERATOR (PARTITION_AWARE) or TASK_LOST, frameworks hear
    /// FAILURE, its offers are rescinded, and it may not register again.
    pub(crate) fn mark_agent_gone(
        &mut self,
        id: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), Rejection> {
        let known = self.agents.contains_key(id)
            || self.unreachable.contains_key(id)
            || self.recovered.contains_key(id);
        if !known {
            return Err(Rejection::new(400, format!("Agent {id} not found")));
        }
        tracing::warn!(agent_id = %id, "agent marked gone by the operator");
        self.rescind_agent_offers(id, now);
        self.lose_agent_tasks(
            id,
            TaskState::TaskGoneByOperator,
            Reason::AgentRemovedByOperator,
            "Agent marked gone",
            wall,
            false,
        );
        let unreachable: Vec<(String, String)> = self
            .unreachable_tasks
            .iter()
            .filter(|(_, t)| t.agent_id.value == id)
            .map(|(k, _)| k.clone())
            .collect();
        for key in unreachable {
            if let Some(mut t) = self.unreachable_tasks.remove(&key) {
                let pa = self.frameworks.get(&key.0).is_some_and(|f| f.caps.partition_aware);
                let state = if pa { TaskState::TaskGoneByOperator } else { TaskState::TaskLost };
                let s = self.master_status(
                    &key.1,
                    state,
                    Reason::AgentRemovedByOperator,
                    "Agent marked gone".into(),
                    Some(id),
                    wall,
                );
                t.set_state(state);
                self.complete_task(t);
                self.send_framework(&key.0, Self::update_event(s));
            }
        }
        if let Some(a) = self.agents.remove(id)
            && let Some(conn) = a.conn
        {
            self.conns.remove(&conn);
            let mut e = agent::Event {
                error: Some(agent::event::Error { message: "Agent has been marked gone".into() }),
                ..Default::default()
            };
            e.set_type(agent::event::Type::Error);
            self.out.push(Out::Agent(conn, e));
            self.out.push(Out::Close(conn));
        }
        self.unreachable.remove(id);
        self.recovered.remove(id);
        self.gone.insert(id.to_owned());
        self.registry_dirty = true;
        self.broadcast_failure(id);
        Ok(())
    }

    fn mark_unreachable(&mut self, id: &str, now: Instant, wall: SystemTime) {
        let Some(agent) = self.agents.remove(id) else { return };
        tracing::warn!(agent_id = %id, "agent unreachable");
        self.unreachable.insert(id.to_owned(), (agent.info.clone(), epoch_secs(wall)));
        self.registry_dirty = true;
        self.lose_agent_tasks(
            id,
            TaskState::TaskUnreachable,
            Reason::AgentRemoved,
            "Agent is unreachable",
            wall,
            true,
        );
        self.broadcast_failure(id);
        let _ = now;
    }

    fn remove_agent(&mut self, id: &str, now: Instant, wall: SystemTime) {
        self.rescind_agent_offers(id, now);
        self.lose_agent_tasks(
            id,
            TaskState::TaskLost,
            Reason::AgentRemoved,
            "Agent removed",
            wall,
            false,
        );
        self.registry_dirty = true;
        if let Some(a) = self.agents.remove(id)
            && let Some(conn) = a.conn
        {
            self.conns.remove(&conn);
            self.out.push(Out::Close(conn));
        }
        self.broadcast_failure(id);
        let mut e = op::Event {
            agent_removed: Some(op::event::AgentRemoved {
                agent_id: v1::AgentId { value: id.into() },
            }),
            ..Default::default()
        };
        e.set_type(op::event::Type::AgentRemoved);
        self.broadcast_operator(e);
        tracing::info!(agent_id = %id, "agent removed");
    }

    fn broadcast_failure(&mut self, agent_id: &str) {
        let mut e = sched::Event {
            failure: Some(event::Failure {
                agent_id: Some(v1::AgentId { value: agent_id.into() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        e.set_type(event::Type::Failure);
        let ids: Vec<String> = self.frameworks.keys().cloned().collect();
        for id in ids {
            self.send_framework(&id, e.clone());
        }
    }

    // === time ===

    /// Heartbeats, failover timeouts, offer timeouts, unreachable agents.
    pub(crate) fn tick(&mut self, now: Instant, wall: SystemTime) {
        let hb = self.config.heartbeat_interval;
        let mut beats = Vec::new();
        for fw in self.frameworks.values_mut() {
            if let Some(conn) = fw.conn
                && now.duration_since(fw.last_heartbeat) >= hb
            {
                fw.last_heartbeat = now;
                beats.push(Out::Scheduler(conn, heartbeat()));
            }
        }
        self.out.extend(beats);
        if now.duration_since(self.operator_heartbeat) >= hb {
            self.operator_heartbeat = now;
            let mut e = op::Event::default();
            e.set_type(op::event::Type::Heartbeat);
            self.broadcast_operator(e);
            let mut ae = agent::Event::default();
            ae.set_type(agent::event::Type::Heartbeat);
            let conns: Vec<ConnId> = self.agents.values().filter_map(|a| a.conn).collect();
            for conn in conns {
                self.out.push(Out::Agent(conn, ae.clone()));
            }
        }
        let expired: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.failover_deadline.is_some_and(|d| now >= d))
            .map(|(k, _)| k.clone())
            .collect();
        for id in expired {
            tracing::info!(framework_id = %id, "failover timeout passed");
            self.remove_framework(&id, now, wall);
        }
        if let Some(timeout) = self.config.offer_timeout {
            let old: Vec<String> = self
                .offers
                .iter()
                .filter(|(_, o)| now.duration_since(o.created) >= timeout)
                .map(|(k, _)| k.clone())
                .collect();
            for id in old {
                self.rescind(&id, now);
            }
        }
        let gone: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, a)| {
                a.disconnected_at
                    .is_some_and(|d| now.duration_since(d) >= self.config.agent_unreachable_timeout)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for id in gone {
            self.mark_unreachable(&id, now, wall);
        }
    }

    // === operator API ===

    pub(crate) fn subscribe_operator(&mut self, conn: ConnId) {
        self.conns.insert(conn, Owner::Operator);
        self.operator_conns.insert(conn);
        let mut e = op::Event {
            subscribed: Some(op::event::Subscribed {
                get_state: Some(self.get_state()),
                heartbeat_interval_seconds: Some(self.config.heartbeat_interval.as_secs_f64()),
            }),
            ..Default::default()
        };
        e.set_type(op::event::Type::Subscribed);
        self.out.push(Out::Operator(conn, e));
        let mut hb = op::Event::default();
        hb.set_type(op::event::Type::Heartbeat);
        self.out.push(Out::Operator(conn, hb));
    }

    fn agent_view(&self, id: &str) -> Option<op::response::get_agents::Agent> {
        let a = self.agents.get(id)?;
        let mut info = a.info.clone();
        info.resources = resources_to_proto(&a.total, Format::Endpoint);
        Some(op::response::get_agents::Agent {
            agent_info: info,
            active: a.conn.is_some(),
            version: a.version.clone(),
            pid: Some(format!("slave(1)@{}:{}", a.info.hostname, a.info.port.unwrap_or(5051))),
            registered_time: Some(v1::TimeInfo { nanoseconds: (a.registered_time * 1e9) as i64 }),
            reregistered_time: a
                .reregistered_time
                .map(|t| v1::TimeInfo { nanoseconds: (t * 1e9) as i64 }),
            total_resources: resources_to_proto(&a.total, Format::Endpoint),
            allocated_resources: resources_to_proto(&a.used, Format::Endpoint),
            offered_resources: resources_to_proto(&a.offered, Format::Endpoint),
            capabilities: a.capabilities.clone(),
            ..Default::default()
        })
    }

    fn framework_view(&self, id: &str) -> Option<op::response::get_frameworks::Framework> {
        let f = self.frameworks.get(id)?;
        let mut allocated = Resources::default();
        for r in f.allocated.values() {
            allocated.add(r);
        }
        Some(op::response::get_frameworks::Framework {
            framework_info: f.info.clone(),
            active: f.connected(),
            connected: f.connected(),
            registered_time: Some(v1::TimeInfo { nanoseconds: (f.registered_time * 1e9) as i64 }),
            reregistered_time: f
                .reregistered_time
                .map(|t| v1::TimeInfo { nanoseconds: (t * 1e9) as i64 }),
            unregistered_time: f
                .unregistered_time
                .map(|t| v1::TimeInfo { nanoseconds: (t * 1e9) as i64 }),
            allocated_resources: resources_to_proto(&allocated, Format::Endpoint),
            recovered: false,
            ..Default::default()
        })
    }

    pub(crate) fn get_agents(&self) -> op::response::GetAgents {
        op::response::GetAgents {
            agents: self.agents.keys().filter_map(|id| self.agent_view(id)).collect(),
            recovered_agents: self.recovered.values().cloned().collect(),
        }
    }

    pub(crate) fn get_frameworks(&self) -> op::response::GetFrameworks {
        op::response::GetFrameworks {
            frameworks: self.frameworks.keys().filter_map(|id| self.framework_view(id)).collect(),
            recovered_frameworks: vec![],
            completed_frameworks: self
                .completed_frameworks
                .iter()
                .map(|info| op::response::get_frameworks::Framework {
                    framework_info: info.clone(),
                    active: false,
                    connected: false,
                    recovered: false,
                    ..Default::default()
                })
                .collect(),
        }
    }

    pub(crate) fn get_tasks(&self) -> op::response::GetTasks {
        op::response::GetTasks {
            tasks: self.tasks.values().map(|t| t.task.clone()).collect(),
            completed_tasks: self.completed_tasks.iter().cloned().collect(),
            unreachable_tasks: self.unreachable_tasks.values().cloned().collect(),
            ..Default::default()
        }
    }

    pub(crate) fn get_executors(&self) -> op::response::GetExecutors {
        op::response::GetExecutors {
            executors: self
                .agents
                .values()
                .flat_map(|a| {
                    a.executors.values().map(|(info, _)| op::response::get_executors::Executor {
                        executor_info: info.clone(),
                        agent_id: v1::AgentId { value: a.id().into() },
                    })
                })
                .collect(),
            ..Default::default()
        }
    }

    pub(crate) fn get_state(&self) -> op::response::GetState {
        op::response::GetState {
            get_tasks: Some(self.get_tasks()),
            get_executors: Some(self.get_executors()),
            get_frameworks: Some(self.get_frameworks()),
            get_agents: Some(self.get_agents()),
        }
    }

    /// Operator TEARDOWN of a framework.
    pub(crate) fn operator_teardown(
        &mut self,
        fw_id: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), Rejection> {
        if !self.frameworks.contains_key(fw_id) {
            return Err(Rejection::new(
                400,
                format!("No framework found with specified ID {fw_id}"),
            ));
        }
        self.remove_framework(fw_id, now, wall);
        Ok(())
    }

    /// The legacy `/master/state` document.
    pub(crate) fn legacy_state(&self, flags: &serde_json::Value) -> serde_json::Value {
        use serde_json::json;
        let info = &self.config.info;
        let addr = format!("{}:{}", info.hostname.clone().unwrap_or_default(), info.port);
        let agents: Vec<serde_json::Value> = self
            .agents
            .values()
            .map(|a| {
                // The agent's own attributes; one that does not convert is left out.
                let attributes: Vec<_> =
                    a.info.attributes.iter().filter_map(|x| attribute_from_proto(x).ok()).collect();
                json!({
                    "id": a.id(),
                    "pid": format!("slave(1)@{}:{}", a.info.hostname, a.info.port.unwrap_or(5051)),
                    "hostname": a.info.hostname,
                    "port": a.info.port.unwrap_or(5051),
                    "registered_time": a.registered_time,
                    "reregistered_time": a.reregistered_time,
                    "resources": state_object(&a.total),
                    "used_resources": state_object(&a.used),
                    "offered_resources": state_object(&a.offered),
                    "unreserved_resources": state_object(&a.total.allocatable_to("*")),
                    "attributes": attributes_state_object(&attributes),
                    "active": a.conn.is_some(),
                    "deactivated": false,
                    "version": a.version,
                    "capabilities": a.capabilities.iter().map(|c| format!("{:?}", c.r#type()).to_uppercase()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let frameworks: Vec<serde_json::Value> = self
            .frameworks
            .iter()
            .map(|(id, f)| {
                let executors: Vec<serde_json::Value> = self
                    .agents
                    .values()
                    .flat_map(|a| {
                        a.executors.iter().filter(|((fw, _), _)| fw == id).map(|((_, ex), (info, _))| {
                            json!({"executor_id": ex, "name": info.name.clone().unwrap_or_default(), "slave_id": a.id()})
                        })
                    })
                    .collect();
                let tasks: Vec<serde_json::Value> = self
                    .tasks
                    .iter()
                    .filter(|((fw, _), _)| fw == id)
                    .map(|(_, t)| {
                        json!({
                            "id": t.task.task_id.value,
                            "name": t.task.name,
                            "slave_id": t.task.agent_id.value,
                            "state": format!("{:?}", t.task.state()),
                            "executor_id": t.task.executor_id.as_ref().map(|e| e.value.clone()).unwrap_or_default(),
                        })
                    })
                    .collect();
                json!({
                    "id": id,
                    "name": f.info.name,
                    "user": f.info.user,
                    "active": f.connected(),
                    "connected": f.connected(),
                    "failover_timeout": f.info.failover_timeout.unwrap_or(0.0),
                    "checkpoint": f.info.checkpoint.unwrap_or(false),
                    "roles": f.roles,
                    "registered_time": f.registered_time,
                    "executors": executors,
                    "tasks": tasks,
                    "offers": f.offers.iter().collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "id": info.id,
            "pid": format!("master@{addr}"),
            "hostname": info.hostname,
            "start_time": self.start_time,
            "elected_time": self.start_time,
            "leader": format!("master@{addr}"),
            "leader_info": km_mesos::json::to_value(info),
            "activated_slaves": self.agents.values().filter(|a| a.conn.is_some()).count(),
            "deactivated_slaves": 0,
            "unreachable_slaves": self.unreachable.len(),
            "flags": flags,
            "slaves": agents,
            "recovered_slaves": self.recovered.values().map(|a| json!({
                "id": a.id.as_ref().map(|i| i.value.clone()).unwrap_or_default(),
                "hostname": a.hostname,
                "port": a.port.unwrap_or(5051),
            })).collect::<Vec<_>>(),
            "frameworks": frameworks,
            "completed_frameworks": self.completed_frameworks.iter().map(|f| json!({"id": f.id.as_ref().map(|i| i.value.clone()), "name": f.name})).collect::<Vec<_>>(),
            "orphan_tasks": [],
            "unregistered_frameworks": [],
        })
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
mod wire;
