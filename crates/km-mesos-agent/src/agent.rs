//! The running agent: shared state behind one lock, and the async glue that
//! applies the decisions of [`crate::state`] and [`crate::updates`] —
//! launching executors and command tasks, status updates to the master,
//! kills and shutdowns.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use km_mesos::agent::{self as proto, call, event};
use km_mesos::resources::{Format, attribute_to_proto, resources_to_proto};
use km_mesos::v1::executor::{Event as ExecEvent, event as exec_event};
use km_mesos::v1::{
    AgentId, AgentInfo, ContainerId, ContainerStatus, ExecutorId, FrameworkId, FrameworkInfo,
    KillPolicy, TaskId, TaskInfo, TaskState, TaskStatus, agent_info, framework_info, task_status,
};
use nix::sys::signal::Signal;
use tokio::sync::{Notify, mpsc, watch};

use crate::checkpoint;
use crate::config::Config;
use crate::env::{self, AgentEnvParams};
use crate::fetch;
use crate::process;
use crate::state::{self, ExecutorKind, KillDecision, Launch, Phase, Registry, RunDecision};
use crate::updates::{Accepted, Outgoing, UpdateManager};

/// Sender half of an executor's event stream.
pub(crate) type ExecutorStream = mpsc::UnboundedSender<ExecEvent>;

/// Everything mutable, behind one lock (never held across an await).
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) agent_id: Option<String>,
    pub(crate) registry: Registry,
    pub(crate) updates: UpdateManager,
    /// Subscribed executors' event streams, by (framework, executor).
    pub(crate) streams: HashMap<(String, String), ExecutorStream>,
    /// Kill switches of running command tasks (the value is the grace period).
    kills: HashMap<(String, String), watch::Sender<Option<Duration>>>,
    /// Why an executor is being torn down (reason for its leftover tasks), by container id.
    doom: HashMap<String, task_status::Reason>,
    /// Frameworks the master shut down: no more updates for them.
    removed_frameworks: HashSet<String>,
    /// Whether the master link is registered.
    pub(crate) registered: bool,
}

/// The agent.
#[derive(Debug)]
pub struct Agent {
    /// Configuration (with the bound port).
    pub cfg: Config,
    core: Mutex<Core>,
    http: reqwest::Client,
    /// For the fetcher: no overall timeout (downloads may be large).
    fetch_http: reqwest::Client,
    update_wake: Notify,
    stopped: AtomicBool,
}

fn now_epoch() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn duration_of(policy: Option<&KillPolicy>) -> Option<Duration> {
    policy
        .and_then(|p| p.grace_period.as_ref())
        .map(|d| Duration::from_nanos(u64::try_from(d.nanoseconds).unwrap_or(0)))
}

impl Agent {
    /// A new agent (not yet connected to anything).
    pub(crate) fn new(cfg: Config, agent_id: Option<String>) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let updates = UpdateManager::new(cfg.update_retry);
        Arc::new(Self {
            cfg,
            core: Mutex::new(Core {
                agent_id,
                registry: Registry::default(),
                updates,
                streams: HashMap::new(),
                kills: HashMap::new(),
                doom: HashMap::new(),
                removed_frameworks: HashSet::new(),
                registered: false,
            }),
            http,
            fetch_http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            update_wake: Notify::new(),
            stopped: AtomicBool::new(false),
        })
    }

    /// Locks the core. The lock is never held across an await.
    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many executors have a live subscription.
    pub fn subscribed_executors(&self) -> usize {
        self.core().streams.len()
    }

    /// The agent id, once registered.
    pub fn agent_id(&self) -> Option<String> {
        self.core().agent_id.clone()
    }

    /// `AgentInfo` as advertised.
    pub(crate) fn agent_info(&self, agent_id: Option<&str>) -> AgentInfo {
        AgentInfo {
            hostname: self.cfg.hostname.clone(),
            port: Some(i32::from(self.cfg.port)),
            resources: resources_to_proto(&self.cfg.resources, Format::PostRefinement),
            attributes: self.cfg.attributes.iter().map(attribute_to_proto).collect(),
            id: agent_id.map(|id| AgentId { value: id.to_owned() }),
            domain: None,
        }
    }

    /// Sandbox path of an executor run.
    pub(crate) fn sandbox_path(
        &self,
        agent_id: &str,
        fw: &str,
        ex: &str,
        container: &str,
    ) -> PathBuf {
        self.cfg
            .work_dir
            .join("slaves")
            .join(agent_id)
            .join("frameworks")
            .join(fw)
            .join("executors")
            .join(ex)
            .join("runs")
            .join(container)
    }

    // ----- master link -------------------------------------------------------

    /// The SUBSCRIBE call: who we are and what we run.
    pub(crate) fn subscribe_call(&self) -> proto::Call {
        let core = self.core();
        let agent_id = core.agent_id.clone();
        let mut frameworks = Vec::new();
        let mut executors = Vec::new();
        let mut tasks = Vec::new();
        for (fw_id, fw) in &core.registry.frameworks {
            frameworks.push(fw.info.clone());
            for ex in fw.executors.values() {
                if ex.kind == ExecutorKind::Custom {
                    executors.push(ex.info.clone());
                }
                for t in ex.tasks.values() {
                    tasks.push(km_mesos::v1::Task {
                        name: t.info.name.clone(),
                        task_id: t.info.task_id.clone(),
                        framework_id: FrameworkId { value: fw_id.clone() },
                        executor_id: (ex.kind == ExecutorKind::Custom)
                            .then(|| ex.info.executor_id.clone()),
                        agent_id: AgentId { value: agent_id.clone().unwrap_or_default() },
                        state: t.state as i32,
                        resources: t.info.resources.clone(),
                        labels: t.info.labels.clone(),
                        kill_policy: t.info.kill_policy,
                        ..Default::default()
                    });
                }
            }
        }
        let cap =
            |t: agent_info::capability::Type| agent_info::Capability { r#type: Some(t as i32) };
        let mut c = proto::Call {
            agent_id: agent_id.as_ref().map(|id| AgentId { value: id.clone() }),
            subscribe: Some(call::Subscribe {
                agent_info: self.agent_info(agent_id.as_deref()),
                capabilities: vec![
                    cap(agent_info::capability::Type::MultiRole),
                    cap(agent_info::capability::Type::HierarchicalRole),
                    cap(agent_info::capability::Type::ReservationRefinement),
                ],
                version: Some(env!("CARGO_PKG_VERSION").to_owned()),
                frameworks,
                executors,
                tasks,
            }),
            ..Default::default()
        };
        c.set_type(call::Type::Subscribe);
        c
    }

    /// Posts a call to the master (best effort; reliability of status
    /// updates comes from the update manager). Dropped while unregistered.
    pub(crate) fn post(self: &Arc<Self>, mut c: proto::Call) {
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let agent_id = {
            let core = self.core();
            core.agent_id.clone().filter(|_| core.registered)
        };
        let Some(agent_id) = agent_id else {
            tracing::debug!(r#type = ?c.r#type(), "not registered; call dropped");
            return;
        };
        c.agent_id = Some(AgentId { value: agent_id });
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let url = format!("{}{}", this.cfg.master, crate::master::AGENT_PATH);
            let ct = km_mesos::ContentType::Protobuf;
            let res = this
                .http
                .post(&url)
                .header(http::header::CONTENT_TYPE, ct.as_str())
                .body(ct.encode(&c))
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(status = %r.status(), r#type = ?c.r#type(), "master refused a call")
                }
                Err(e) => tracing::warn!(r#type = ?c.r#type(), "call to master failed: {e}"),
            }
        });
    }

    fn send_update(self: &Arc<Self>, out: Outgoing) {
        let mut c = proto::Call {
            status_update: Some(call::StatusUpdate {
                framework_id: FrameworkId { value: out.framework_id },
                status: out.status,
            }),
            ..Default::default()
        };
        c.set_type(call::Type::StatusUpdate);
        self.post(c);
    }

    /// Registered (or re-registered) with `agent_id`: keep it, resend heads.
    pub(crate) fn registered(self: &Arc<Self>, agent_id: String) {
        let heads = {
            let mut core = self.core();
            if core.agent_id.as_deref() != Some(&agent_id)
                && let Err(e) = checkpoint::save_agent_id(&self.cfg.work_dir, &agent_id)
            {
                tracing::error!("cannot persist the agent id: {e}");
            }
            core.agent_id = Some(agent_id);
            core.registered = true;
            core.updates.resend(None, Instant::now())
        };
        for out in heads {
            self.send_update(out);
        }
    }

    /// The master link broke.
    pub(crate) fn disconnected(&self) {
        self.core().registered = false;
    }

    /// Retries due status updates, forever.
    pub(crate) async fn retry_loop(self: Arc<Self>) {
        loop {
            let next = self.core().updates.next_deadline();
            let sleep = next
                .map_or(Duration::from_secs(1), |at| at.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = tokio::time::sleep(sleep.min(Duration::from_secs(1))) => {}
                _ = self.update_wake.notified() => {}
            }
            let due = self.core().updates.due(Instant::now());
            for out in due {
                tracing::debug!(task = %out.status.task_id.value, "retrying status update");
                self.send_update(out);
            }
        }
    }

    // ----- status updates ----------------------------------------------------

    /// Records an update (from an executor or the agent) and sends it if it
    /// heads its stream. Returns false for a duplicate.
    pub(crate) fn record_update(self: &Arc<Self>, fw: &str, mut status: TaskStatus) -> bool {
        let accepted = {
            let mut core = self.core();
            if core.removed_frameworks.contains(fw) {
                return true;
            }
            if status.agent_id.is_none() {
                status.agent_id = core.agent_id.clone().map(|value| AgentId { value });
            }
            if status.timestamp.is_none() {
                status.timestamp = Some(now_epoch());
            }
            let state = status.state();
            let task = status.task_id.value.clone();
            let accepted = core.updates.update(fw, status, Instant::now());
            if accepted != Accepted::Duplicate {
                core.registry.set_task_state(fw, &task, state);
                let ex = core
                    .registry
                    .executor_of_task(fw, &task)
                    .map(|e| e.info.executor_id.value.clone());
                if let Some(ex) = ex {
                    self.checkpoint_executor_locked(&core, fw, &ex);
                }
            }
            accepted
        };
        self.update_wake.notify_one();
        match accepted {
            Accepted::SendNow(out) => {
                self.send_update(out);
                true
            }
            Accepted::Queued => true,
            Accepted::Duplicate => false,
        }
    }

    /// An update generated by the agent or the built-in command executor.
    #[allow(clippy::too_many_arguments)]
    fn agent_update(
        self: &Arc<Self>,
        fw: &str,
        task: &TaskId,
        executor_id: Option<&str>,
        container_id: Option<&str>,
        state: TaskState,
        source: task_status::Source,
        reason: Option<task_status::Reason>,
        message: Option<String>,
    ) {
        let mut status = TaskStatus {
            task_id: task.clone(),
            message,
            executor_id: executor_id.map(|value| ExecutorId { value: value.to_owned() }),
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            container_status: container_id.map(|c| ContainerStatus {
                container_id: Some(ContainerId { value: c.to_owned(), parent: None }),
                ..Default::default()
            }),
            ..Default::default()
        };
        status.set_state(state);
        status.set_source(source);
        if let Some(reason) = reason {
            status.set_reason(reason);
        }
        self.record_update(fw, status);
    }

    /// The master relayed the framework's acknowledgement.
    pub(crate) fn acknowledged(self: &Arc<Self>, ack: &event::Acknowledge) {
        let res = self.core().updates.acknowledge(
            &ack.framework_id.value,
            &ack.task_id.value,
            &ack.uuid,
            Instant::now(),
        );
        match res {
            Ok(Some(next)) => self.send_update(next),
            Ok(None) => {}
            Err(e) => tracing::debug!("ignoring acknowledgement: {e}"),
        }
        self.update_wake.notify_one();
    }

    // ----- events from the master ----------------------------------------------

    /// Handles one event of the master's stream.
    pub(crate) fn handle_event(self: &Arc<Self>, ev: proto::Event) {
        match ev.r#type() {
            event::Type::RunTask => {
                if let Some(run) = ev.run_task {
                    self.run_task(run.framework_info, run.task);
                }
            }
            event::Type::RunTaskGroup => {
                if let Some(run) = ev.run_task_group {
                    self.run_task_group(run.framework_info, run.executor, run.task_group);
                }
            }
            event::Type::KillTask => {
                if let Some(kill) = ev.kill_task {
                    self.kill_task(&kill.framework_id.value, &kill.task_id, kill.kill_policy);
                }
            }
            event::Type::ShutdownExecutor => {
                if let Some(s) = ev.shutdown_executor {
                    self.shutdown_executor(&s.framework_id.value, &s.executor_id.value);
                }
            }
            event::Type::ShutdownFramework => {
                if let Some(s) = ev.shutdown_framework {
                    let fw = s.framework_id.value;
                    let ids = {
                        let mut core = self.core();
                        core.removed_frameworks.insert(fw.clone());
                        core.updates.remove_framework(&fw);
                        core.registry.executor_ids(&fw)
                    };
                    for ex in ids {
                        self.shutdown_executor(&fw, &ex);
                    }
                }
            }
            event::Type::Acknowledge => {
                if let Some(ack) = ev.acknowledge {
                    self.acknowledged(&ack);
                }
            }
            event::Type::UpdateFramework => {
                if let Some(u) = ev.update_framework {
                    let fw = state::framework_id(&u.framework_info);
                    let heads = {
                        let mut core = self.core();
                        if let Some(f) = core.registry.frameworks.get_mut(&fw) {
                            f.info = u.framework_info;
                        }
                        core.updates.resend(Some(&fw), Instant::now())
                    };
                    for out in heads {
                        self.send_update(out);
                    }
                }
            }
            event::Type::Message => {
                if let Some(m) = ev.message {
                    let mut e = ExecEvent {
                        message: Some(exec_event::Message { data: m.data }),
                        ..Default::default()
                    };
                    e.set_type(exec_event::Type::Message);
                    if !self.send_to_executor(&m.framework_id.value, &m.executor_id.value, e) {
                        tracing::warn!(executor = %m.executor_id.value, "message for an unsubscribed executor dropped");
                    }
                }
            }
            // The master's ping: answering it is how it tells a live agent
            // from one whose connection is open but that no longer runs.
            event::Type::Heartbeat => {
                let mut c = proto::Call::default();
                c.set_type(call::Type::Pong);
                self.post(c);
            }
            event::Type::Registered | event::Type::Error | event::Type::Unknown => {}
        }
    }

    /// Sends an event to a subscribed executor; false if it has no stream.
    pub(crate) fn send_to_executor(&self, fw: &str, ex: &str, e: ExecEvent) -> bool {
        let core = self.core();
        core.streams.get(&(fw.to_owned(), ex.to_owned())).is_some_and(|tx| tx.send(e).is_ok())
    }

    fn new_sandbox(&self) -> impl FnOnce(&str, &str, &str) -> PathBuf + '_ {
        let agent_id = self.core().agent_id.clone().unwrap_or_else(|| "unregistered".to_owned());
        move |fw, ex, c| self.sandbox_path(&agent_id, fw, ex, c)
    }

    fn refuse(self: &Arc<Self>, fw: &str, tasks: &[TaskInfo], message: String) {
        for t in tasks {
            self.agent_update(
                fw,
                &t.task_id,
                None,
                None,
                TaskState::TaskFailed,
                task_status::Source::Agent,
                Some(task_status::Reason::TaskInvalid),
                Some(message.clone()),
            );
        }
    }

    fn run_task(self: &Arc<Self>, fw_info: FrameworkInfo, task: TaskInfo) {
        let fw = state::framework_id(&fw_info);
        let sandbox = self.new_sandbox();
        let decision = self.core().registry.run_task(&fw_info, task.clone(), sandbox);
        self.apply_run(&fw, decision, &[task]);
    }

    fn run_task_group(
        self: &Arc<Self>,
        fw_info: FrameworkInfo,
        executor: km_mesos::v1::ExecutorInfo,
        group: km_mesos::v1::TaskGroupInfo,
    ) {
        let fw = state::framework_id(&fw_info);
        let tasks = group.tasks.clone();
        let sandbox = self.new_sandbox();
        let decision = self.core().registry.run_task_group(&fw_info, executor, group, sandbox);
        self.apply_run(&fw, decision, &tasks);
    }

    fn apply_run(self: &Arc<Self>, fw: &str, decision: RunDecision, tasks: &[TaskInfo]) {
        match decision {
            RunDecision::StartExecutor { executor_id } => {
                let this = Arc::clone(self);
                let fw = fw.to_owned();
                tokio::spawn(async move { this.start_executor(fw, executor_id).await });
            }
            RunDecision::Queued => {}
            RunDecision::Deliver { executor_id, launch } => {
                if !self.send_to_executor(fw, &executor_id, launch_event(launch)) {
                    tracing::warn!(executor = %executor_id, "executor stream gone; launch lost");
                }
            }
            RunDecision::Refused(message) => self.refuse(fw, tasks, message),
        }
    }

    fn kill_task(self: &Arc<Self>, fw: &str, task_id: &TaskId, policy: Option<KillPolicy>) {
        let decision = self.core().registry.kill(fw, &task_id.value);
        match decision {
            KillDecision::AlreadyTerminal => {}
            KillDecision::KilledDuringLaunch(ids) => {
                for id in ids {
                    self.agent_update(
                        fw,
                        &TaskId { value: id },
                        None,
                        None,
                        TaskState::TaskKilled,
                        task_status::Source::Agent,
                        Some(task_status::Reason::TaskKilledDuringLaunch),
                        Some("Killed before delivery to the executor".into()),
                    );
                }
            }
            KillDecision::Unknown => {
                let partition_aware = self.core().registry.frameworks.get(fw).is_some_and(|f| {
                    state::has_capability(&f.info, framework_info::capability::Type::PartitionAware)
                });
                let state =
                    if partition_aware { TaskState::TaskDropped } else { TaskState::TaskLost };
                self.agent_update(
                    fw,
                    task_id,
                    None,
                    None,
                    state,
                    task_status::Source::Agent,
                    Some(task_status::Reason::ExecutorTerminated),
                    Some("Cannot find executor".into()),
                );
            }
            KillDecision::Command { executor_id } => {
                let grace = {
                    let core = self.core();
                    let task_policy = core
                        .registry
                        .executor(fw, &executor_id)
                        .and_then(|e| e.tasks.get(&task_id.value))
                        .and_then(|t| duration_of(t.info.kill_policy.as_ref()));
                    duration_of(policy.as_ref())
                        .or(task_policy)
                        .unwrap_or(self.cfg.executor_shutdown_grace_period)
                };
                self.kill_command(fw, &executor_id, grace);
            }
            KillDecision::Forward { executor_id } => {
                let mut e = ExecEvent {
                    kill: Some(exec_event::Kill { task_id: task_id.clone(), kill_policy: policy }),
                    ..Default::default()
                };
                e.set_type(exec_event::Type::Kill);
                if !self.send_to_executor(fw, &executor_id, e) {
                    tracing::warn!(executor = %executor_id, "KILL for an executor without a stream");
                }
            }
        }
    }

    /// Stops a command task: before its process started (fetching) the
    /// runner sees the executor terminating; afterwards its kill switch fires.
    fn kill_command(&self, fw: &str, ex: &str, grace: Duration) {
        let mut core = self.core();
        core.registry.begin_shutdown(fw, ex);
        if let Some(tx) = core.kills.get(&(fw.to_owned(), ex.to_owned())) {
            tx.send_replace(Some(grace));
        }
    }

    /// SHUTDOWN_EXECUTOR: SHUTDOWN event, then after the grace period the
    /// process group is killed.
    pub(crate) fn shutdown_executor(self: &Arc<Self>, fw: &str, ex: &str) {
        let (before, kind, pid, grace) = {
            let mut core = self.core();
            let Some(before) = core.registry.begin_shutdown(fw, ex) else { return };
            let Some(e) = core.registry.executor(fw, ex) else { return };
            let grace =
                env::shutdown_grace_period(&e.info, self.cfg.executor_shutdown_grace_period);
            (before, e.kind, e.pid, grace)
        };
        if kind == ExecutorKind::Command {
            self.kill_command(fw, ex, grace);
            return;
        }
        let mut e = ExecEvent::default();
        e.set_type(exec_event::Type::Shutdown);
        let sent = before == Phase::Running && self.send_to_executor(fw, ex, e);
        let Some(pid) = pid else { return };
        if !sent {
            process::signal_group(pid, Signal::SIGKILL);
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            process::signal_group(pid, Signal::SIGKILL);
        });
    }

    // ----- launching ----------------------------------------------------------

    async fn start_executor(self: Arc<Self>, fw: String, ex: String) {
        let Some((info, kind, dir, container, checkpoint)) = ({
            let core = self.core();
            let cp = core
                .registry
                .frameworks
                .get(&fw)
                .is_some_and(|f| f.info.checkpoint.unwrap_or(false));
            core.registry
                .executor(&fw, &ex)
                .map(|e| (e.info.clone(), e.kind, e.directory.clone(), e.container_id.clone(), cp))
        }) else {
            return;
        };
        let uris = info.command.as_ref().map(|c| c.uris.clone()).unwrap_or_default();
        let prepared = async {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| format!("cannot create sandbox {}: {e}", dir.display()))?;
            fetch::fetch_all(&self.fetch_http, &uris, &dir, self.cfg.fetcher_max_size)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(message) = prepared {
            tracing::warn!(executor = %ex, "launch failed: {message}");
            let left = self.core().registry.executor_terminated(&fw, &ex);
            for t in left {
                self.agent_update(
                    &fw,
                    &t.task_id,
                    Some(&ex),
                    Some(&container),
                    TaskState::TaskFailed,
                    task_status::Source::Agent,
                    Some(task_status::Reason::ContainerLaunchFailed),
                    Some(message.clone()),
                );
            }
            return;
        }
        let terminating =
            self.core().registry.executor(&fw, &ex).is_some_and(|e| e.phase == Phase::Terminating);
        if terminating && kind == ExecutorKind::Custom {
            // Shut down (or its framework removed) while fetching: never start it.
            self.executor_exited(&fw, &ex, &container, None, None);
            return;
        }
        match kind {
            ExecutorKind::Command => self.run_command(fw, ex, info, dir, container).await,
            ExecutorKind::Custom => self.spawn_custom(fw, ex, info, dir, container, checkpoint),
        }
    }

    fn spawn_custom(
        self: Arc<Self>,
        fw: String,
        ex: String,
        info: km_mesos::v1::ExecutorInfo,
        dir: PathBuf,
        container: String,
        checkpoint: bool,
    ) {
        let agent_id = self.core().agent_id.clone().unwrap_or_default();
        let params = AgentEnvParams {
            ip: &self.cfg.ip,
            port: self.cfg.port,
            agent_id: &agent_id,
            shutdown_grace_period: self.cfg.executor_shutdown_grace_period,
            recovery_timeout: self.cfg.recovery_timeout,
            executor_reregistration_timeout: self.cfg.executor_reregistration_timeout,
        };
        let vars = env::executor_env(&params, &fw, checkpoint, &info, &dir);
        let command = info.command.clone().unwrap_or_default();
        let child = match process::spawn(&command, &vars, &dir) {
            Ok(child) => child,
            Err(e) => {
                let left = self.core().registry.executor_terminated(&fw, &ex);
                for t in left {
                    self.agent_update(
                        &fw,
                        &t.task_id,
                        Some(&ex),
                        Some(&container),
                        TaskState::TaskFailed,
                        task_status::Source::Agent,
                        Some(task_status::Reason::ContainerLaunchFailed),
                        Some(format!("Failed to launch executor: {e}")),
                    );
                }
                return;
            }
        };
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        {
            let mut core = self.core();
            if let Some(e) = core.registry.executor_mut(&fw, &ex) {
                e.pid = pid;
            }
            self.checkpoint_executor_locked(&core, &fw, &ex);
        }
        tracing::info!(framework = %fw, executor = %ex, ?pid, "executor started");
        // Registration timeout.
        let this = Arc::clone(&self);
        let (fw2, ex2, c2) = (fw.clone(), ex.clone(), container.clone());
        tokio::spawn(async move {
            tokio::time::sleep(this.cfg.executor_registration_timeout).await;
            let stale = {
                let mut core = this.core();
                let launching = core
                    .registry
                    .executor(&fw2, &ex2)
                    .is_some_and(|e| e.container_id == c2 && e.phase == Phase::Launching);
                if launching {
                    core.doom.insert(c2.clone(), task_status::Reason::ExecutorRegistrationTimeout);
                }
                launching
            };
            if let (true, Some(pid)) = (stale, pid) {
                tracing::warn!(executor = %ex2, "executor did not subscribe in time; killing it");
                process::signal_group(pid, Signal::SIGKILL);
            }
        });
        tokio::spawn(async move {
            let mut child = child;
            let status = child.wait().await.ok();
            self.executor_exited(&fw, &ex, &container, pid, status);
        });
    }

    /// A custom executor's process ended (`status` unknown for recovered ones).
    pub(crate) fn executor_exited(
        self: &Arc<Self>,
        fw: &str,
        ex: &str,
        container: &str,
        pid: Option<i32>,
        status: Option<std::process::ExitStatus>,
    ) {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(pid) = pid {
            process::signal_group(pid, Signal::SIGKILL);
        }
        let (left, reason, removed) = {
            let mut core = self.core();
            // Only if it is still this run of the executor.
            if core.registry.executor(fw, ex).is_none_or(|e| e.container_id != container) {
                return;
            }
            core.streams.remove(&(fw.to_owned(), ex.to_owned()));
            let reason =
                core.doom.remove(container).unwrap_or(task_status::Reason::ExecutorTerminated);
            let left = core.registry.executor_terminated(fw, ex);
            checkpoint::remove_executor(&self.cfg.work_dir, fw, ex);
            (left, reason, core.removed_frameworks.contains(fw))
        };
        tracing::info!(framework = %fw, executor = %ex, ?status, "executor exited");
        if !removed {
            let why =
                status.map_or_else(|| "Executor terminated".to_owned(), process::describe_exit);
            for t in left {
                self.agent_update(
                    fw,
                    &t.task_id,
                    Some(ex),
                    Some(container),
                    TaskState::TaskFailed,
                    task_status::Source::Agent,
                    Some(reason),
                    Some(why.clone()),
                );
            }
        }
        let mut c = proto::Call {
            executor_exited: Some(call::ExecutorExited {
                framework_id: FrameworkId { value: fw.to_owned() },
                executor_id: ExecutorId { value: ex.to_owned() },
                status: status.map(|s| s.into_raw()),
            }),
            ..Default::default()
        };
        c.set_type(call::Type::ExecutorExited);
        self.post(c);
    }

    /// The built-in command executor: STARTING, RUNNING, then the outcome.
    async fn run_command(
        self: Arc<Self>,
        fw: String,
        ex: String,
        info: km_mesos::v1::ExecutorInfo,
        dir: PathBuf,
        container: String,
    ) {
        let task_id = TaskId { value: ex.clone() };
        let (kill_tx, mut kill_rx) = watch::channel(None::<Duration>);
        let already_killed = {
            let mut core = self.core();
            core.kills.insert((fw.clone(), ex.clone()), kill_tx);
            let killed =
                core.registry.executor(&fw, &ex).is_none_or(|e| e.phase == Phase::Terminating);
            if let Some(e) = core.registry.executor_mut(&fw, &ex) {
                if e.phase == Phase::Launching {
                    e.phase = Phase::Running;
                }
                e.queued.clear();
                for t in e.tasks.values_mut() {
                    t.delivered = true;
                }
            }
            killed
        };
        let update =
            |state: TaskState, reason: Option<task_status::Reason>, message: Option<String>| {
                let source = if reason.is_some() {
                    task_status::Source::Agent
                } else {
                    task_status::Source::Executor
                };
                self.agent_update(
                    &fw,
                    &task_id,
                    Some(&ex),
                    Some(&container),
                    state,
                    source,
                    reason,
                    message,
                );
            };
        let finish = || {
            let mut core = self.core();
            core.kills.remove(&(fw.clone(), ex.clone()));
            core.registry.executor_terminated(&fw, &ex);
        };
        if already_killed {
            update(TaskState::TaskKilled, None, Some("Killed before the command started".into()));
            finish();
            return;
        }
        update(TaskState::TaskStarting, None, None);
        let command = info.command.clone().unwrap_or_default();
        let vars = env::command_env(&command);
        let mut child = match process::spawn(&command, &vars, &dir) {
            Ok(c) => c,
            Err(e) => {
                update(
                    TaskState::TaskFailed,
                    Some(task_status::Reason::CommandExecutorFailed),
                    Some(format!("Failed to launch command: {e}")),
                );
                finish();
                return;
            }
        };
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        if let Some(e) = self.core().registry.executor_mut(&fw, &ex) {
            e.pid = Some(pid);
        }
        update(TaskState::TaskRunning, None, None);
        let killed_with = tokio::select! {
            status = child.wait() => {
                process::signal_group(pid, Signal::SIGKILL);
                match status {
                    Ok(s) if s.success() => update(TaskState::TaskFinished, None, Some(process::describe_exit(s))),
                    Ok(s) => update(TaskState::TaskFailed, None, Some(process::describe_exit(s))),
                    Err(e) => update(TaskState::TaskFailed, None, Some(format!("cannot wait for the command: {e}"))),
                }
                finish();
                return;
            }
            grace = async { kill_rx.wait_for(Option::is_some).await.ok().and_then(|g| *g) } => grace,
        };
        let grace = killed_with.unwrap_or(self.cfg.executor_shutdown_grace_period);
        let killing_state = self.core().registry.frameworks.get(&fw).is_some_and(|f| {
            state::has_capability(&f.info, framework_info::capability::Type::TaskKillingState)
        });
        if killing_state {
            update(TaskState::TaskKilling, None, None);
        }
        process::signal_group(pid, Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                process::signal_group(pid, Signal::SIGKILL);
                child.wait().await.ok()
            }
        };
        process::signal_group(pid, Signal::SIGKILL);
        let message = status.map_or_else(|| "Command killed".to_owned(), process::describe_exit);
        update(TaskState::TaskKilled, None, Some(message));
        finish();
    }

    // ----- checkpoints --------------------------------------------------------

    /// Writes the checkpoint of an executor of a checkpointing framework.
    pub(crate) fn checkpoint_executor_locked(&self, core: &Core, fw: &str, ex: &str) {
        let Some(f) = core.registry.frameworks.get(fw) else { return };
        if !f.info.checkpoint.unwrap_or(false) {
            return;
        }
        let Some(e) = f.executors.get(ex) else { return };
        if e.kind != ExecutorKind::Custom {
            return;
        }
        let pending = core
            .updates
            .all_pending()
            .into_iter()
            .filter(|(f2, s)| f2 == fw && e.tasks.contains_key(&s.task_id.value))
            .map(|(_, s)| s)
            .collect();
        if let Err(err) = checkpoint::save_executor(&self.cfg.work_dir, &f.info, e, pending) {
            tracing::warn!(executor = %ex, "cannot checkpoint: {err}");
        }
    }

    /// Graceful stop: kills what cannot survive the agent (command tasks and
    /// executors of non-checkpointing frameworks); checkpointing executors
    /// keep running and re-subscribe to the restarted agent.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let mut core = self.core();
        // Closing the executors' streams makes them notice the agent is gone.
        core.streams.clear();
        for f in core.registry.frameworks.values() {
            let keep = f.info.checkpoint.unwrap_or(false);
            for e in f.executors.values() {
                if (e.kind == ExecutorKind::Command || !keep)
                    && let Some(pid) = e.pid
                {
                    process::signal_group(pid, Signal::SIGKILL);
                }
            }
        }
    }

    /// Re-adopts checkpointed executors after a restart: they get
    /// `--executor_reregistration_timeout` to re-subscribe, else they are
    /// killed and their tasks lost.
    pub(crate) fn recover(self: &Arc<Self>, recovered: Vec<checkpoint::Recovered>) {
        for r in recovered {
            let fw = state::framework_id(&r.framework);
            let ex = r.executor.info.executor_id.value.clone();
            let container = r.executor.container_id.clone();
            let pid = r.executor.pid;
            if !pid.is_some_and(process::alive) {
                tracing::info!(executor = %ex, "checkpointed executor is gone");
                checkpoint::remove_executor(&self.cfg.work_dir, &fw, &ex);
                // Its tasks still need terminal updates: adopt, then exit.
            }
            {
                let mut core = self.core();
                let entry = core.registry.frameworks.entry(fw.clone()).or_insert_with(|| {
                    state::Framework { info: r.framework.clone(), executors: Default::default() }
                });
                entry.executors.insert(ex.clone(), r.executor);
                for status in r.pending {
                    core.updates.update(&fw, status, Instant::now());
                }
            }
            tracing::info!(framework = %fw, executor = %ex, ?pid, "recovering executor");
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let deadline =
                    tokio::time::Instant::now() + this.cfg.executor_reregistration_timeout;
                loop {
                    let (known, subscribed) = {
                        let core = this.core();
                        match core.registry.executor(&fw, &ex) {
                            Some(e) if e.container_id == container => {
                                (true, e.phase != Phase::Launching)
                            }
                            _ => (false, false),
                        }
                    };
                    if !known {
                        return;
                    }
                    if !pid.is_some_and(process::alive) {
                        this.executor_exited(&fw, &ex, &container, pid, None);
                        return;
                    }
                    if !subscribed && tokio::time::Instant::now() >= deadline {
                        this.core().doom.insert(
                            container.clone(),
                            task_status::Reason::ExecutorReregistrationTimeout,
                        );
                        tracing::warn!(executor = %ex, "executor did not re-subscribe in time; killing it");
                        if let Some(pid) = pid {
                            process::signal_group(pid, Signal::SIGKILL);
                        }
                        this.executor_exited(&fw, &ex, &container, pid, None);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
    }
}

/// LAUNCH / LAUNCH_GROUP for an executor.
pub(crate) fn launch_event(launch: Launch) -> ExecEvent {
    let mut e = ExecEvent::default();
    match launch {
        Launch::Task(task) => {
            e.set_type(exec_event::Type::Launch);
            e.launch = Some(exec_event::Launch { task });
        }
        Launch::Group(task_group) => {
            e.set_type(exec_event::Type::LaunchGroup);
            e.launch_group = Some(exec_event::LaunchGroup { task_group });
        }
    }
    e
}
