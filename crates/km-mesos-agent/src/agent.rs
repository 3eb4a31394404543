//! The running agent: shared state behind one lock, and the async glue that
//! applies the decisions of [`crate::state`] and [`crate::updates`].
//!
//! This file holds the state and its accessors; the work is split by
//! responsibility: [`link`] (the master link and its events), [`status`]
//! (reliable status updates), [`launch`] (executors, command tasks,
//! sandboxes), [`kill`] (kills, shutdowns, executor exits) and [`recovery`]
//! (checkpoints, the graceful stop, recovery after a restart).

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
    /// URIs launched with `cache: true`.
    pub(crate) fetch_cache: crate::fetch::FetchCache,
    update_wake: Notify,
    stopped: AtomicBool,
    /// Checkpoint files are written here, off the lock.
    pub(crate) checkpoints: checkpoint::Writer,
    /// When this agent process started (seconds since the epoch).
    pub(crate) started: f64,
}

pub(crate) fn now_epoch() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn duration_of(policy: Option<&KillPolicy>) -> Option<Duration> {
    policy
        .and_then(|p| p.grace_period.as_ref())
        .map(|d| Duration::from_nanos(u64::try_from(d.nanoseconds).unwrap_or(0)))
}

impl Agent {
    /// A new agent (not yet connected to anything).
    pub(crate) fn new(
        cfg: Config,
        agent_id: Option<String>,
        checkpoints: checkpoint::Writer,
    ) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let updates = UpdateManager::new(cfg.update_retry);
        let fetch_cache =
            crate::fetch::FetchCache::new(cfg.fetcher_cache_dir.clone(), cfg.fetcher_cache_size);
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
            fetch_cache,
            update_wake: Notify::new(),
            stopped: AtomicBool::new(false),
            checkpoints,
            started: now_epoch(),
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

mod kill;
mod launch;
mod link;
mod recovery;
mod status;
