//! What goes into the core ([`Input`]) and what comes out ([`Effect`]), as plain data.
//!
//! The core knows neither protobuf nor HTTP: the shell converts Mesos events and Kubernetes
//! watch events into inputs, and carries effects out as Mesos calls and API writes, feeding the
//! results of those writes back as inputs.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use km_offer_matcher::{Offer, Resource};

/// The time of an input: a monotonic reading (any fixed origin) and the wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time since an arbitrary origin; deadlines are expressed in it.
    pub mono: Duration,
    /// Wall-clock time (maintenance windows, creation timestamps).
    pub wall: SystemTime,
}

impl Now {
    /// A time `mono` after the origin, with the wall clock at the same offset from the epoch
    /// (what tests use).
    pub fn at(mono: Duration) -> Now {
        Now { mono, wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + mono }
    }

    /// `d` later.
    #[must_use]
    pub fn after(self, d: Duration) -> Now {
        Now { mono: self.mono + d, wall: self.wall + d }
    }
}

/// A Mesos task state (`mesos.v1.TaskState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskState {
    /// TASK_STAGING.
    Staging,
    /// TASK_STARTING.
    Starting,
    /// TASK_RUNNING.
    Running,
    /// TASK_KILLING.
    Killing,
    /// TASK_FINISHED.
    Finished,
    /// TASK_FAILED.
    Failed,
    /// TASK_KILLED.
    Killed,
    /// TASK_ERROR.
    Error,
    /// TASK_LOST.
    Lost,
    /// TASK_DROPPED.
    Dropped,
    /// TASK_UNREACHABLE.
    Unreachable,
    /// TASK_GONE.
    Gone,
    /// TASK_GONE_BY_OPERATOR.
    GoneByOperator,
    /// TASK_UNKNOWN.
    Unknown,
}

impl TaskState {
    /// Whether the task has ended (from the scheduler's point of view: an unreachable task is
    /// treated as ended, and killed if it ever comes back).
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            TaskState::Staging | TaskState::Starting | TaskState::Running | TaskState::Killing
        )
    }

    /// Mesos's name (`TASK_RUNNING`).
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who produced a status update (`TaskStatus.source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The master (reconciliation, agent removal, invalid launches).
    Master,
    /// The agent (executor exits, launch failures).
    Agent,
    /// The executor.
    Executor,
}

/// A task status update.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskUpdate {
    /// Task ID.
    pub task_id: String,
    /// Agent ID, when the update carries one.
    pub agent_id: Option<String>,
    /// New state.
    pub state: TaskState,
    /// Mesos reason name (`REASON_RECONCILIATION`, …).
    pub reason: Option<String>,
    /// Human-readable message.
    pub message: Option<String>,
    /// Source.
    pub source: Option<Source>,
    /// The update's UUID; present when it must be acknowledged.
    pub uuid: Option<Vec<u8>>,
    /// The executor reports the pod's status to the API itself (it put the pod status in the
    /// update's data), so the scheduler must not write phases for it.
    pub executor_reports_status: bool,
}

impl TaskUpdate {
    /// An update with no reason, message, source or UUID.
    pub fn new(task_id: impl Into<String>, state: TaskState) -> TaskUpdate {
        TaskUpdate {
            task_id: task_id.into(),
            agent_id: None,
            state,
            reason: None,
            message: None,
            source: None,
            uuid: None,
            executor_reports_status: false,
        }
    }

    /// Whether the master sent it in answer to a reconciliation request.
    pub fn is_reconciliation(&self) -> bool {
        self.reason.as_deref() == Some("REASON_RECONCILIATION")
    }
}

/// What the scheduler learnt about a Node object (used after a restart to rebuild the exact
/// ExecutorInfo of executors started before it).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    /// Node name (the agent's hostname).
    pub name: String,
    /// The agent ID recorded on the node, if any.
    pub agent_id: Option<String>,
    /// The executor ID recorded on the node, if any.
    pub executor_id: Option<String>,
    /// The resources that executor was launched with, if recorded.
    pub executor_resources: Option<Vec<Resource>>,
}

/// How an API write the core asked for ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    /// Done.
    Ok,
    /// The object is gone, was replaced (other UID) or is in a state that refuses the write
    /// (already bound elsewhere, being deleted); retrying cannot help.
    Rejected(String),
}

/// An input to the core.
#[derive(Clone, Debug)]
pub enum Input {
    /// A subscription to the master is live.
    Subscribed {
        /// The framework ID.
        framework_id: String,
    },
    /// The subscription was lost; offers are void.
    Disconnected,
    /// New offers (converted to the matcher's model).
    Offers(Vec<Offer>),
    /// An offer was rescinded.
    Rescinded(String),
    /// An agent was removed (FAILURE without executor).
    AgentLost(String),
    /// An executor exited on an agent (FAILURE with executor).
    ExecutorExited {
        /// Agent ID.
        agent_id: String,
        /// Executor ID.
        executor_id: String,
    },
    /// A task status update.
    Update(TaskUpdate),
    /// A pod was added or changed.
    PodApplied(Arc<Pod>),
    /// A pod was deleted.
    PodDeleted(Arc<Pod>),
    /// The pod watch starts a full listing (initial list, or a re-list after the watch broke).
    PodResyncStarted,
    /// The listing is complete: pods known but not listed are gone.
    PodResyncDone,
    /// A Node object as the API has it.
    NodeKnown(NodeInfo),
    /// The ACCEPT for these tasks was answered.
    AcceptDone {
        /// Agent ID.
        agent_id: String,
        /// The tasks it launched.
        task_ids: Vec<String>,
        /// How it ended.
        outcome: AcceptOutcome,
    },
    /// A binding ended.
    BindDone {
        /// Task ID.
        task_id: String,
        /// Outcome.
        result: WriteResult,
    },
    /// Operator request: reconcile every known task now.
    RequestExplicit,
    /// Operator request: reconcile implicitly now.
    RequestImplicit,
    /// Operator request: ask every executor to shut down once it runs no pods.
    Kamikaze,
}

/// How an ACCEPT call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// The master took it (202); task updates follow.
    Accepted,
    /// The master refused the call (4xx): nothing was launched.
    Refused(String),
    /// No answer, or a server error: the tasks may or may not have been launched.
    Unknown(String),
}

/// A pod as effects name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// UID (writes are conditional on it).
    pub uid: Arc<str>,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One task of an ACCEPT.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTask {
    /// Task ID (`pod.<uid>.<suffix>`).
    pub task_id: String,
    /// Task name (`<pod>.<namespace>.pod`).
    pub name: String,
    /// The pod.
    pub pod: PodRef,
    /// Resources (per role; host ports as single-port ranges).
    pub resources: Vec<Resource>,
    /// The pod as v1 JSON, with the launch annotations and mapped host ports.
    pub data: Vec<u8>,
    /// Task labels.
    pub labels: Vec<(String, String)>,
    /// Kill grace period (`terminationGracePeriodSeconds`).
    pub kill_grace: Duration,
}

/// Which executor the tasks of an ACCEPT run in.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecutorChoice {
    /// Start a new executor of the current ID with these resources.
    New(Vec<Resource>),
    /// The current executor already runs there; the resources it was started with, if known
    /// (otherwise the shell uses the configured ones).
    Running(Option<Vec<Resource>>),
}

/// One ACCEPT.
#[derive(Clone, Debug, PartialEq)]
pub struct Accept {
    /// Agent ID.
    pub agent_id: String,
    /// Agent hostname.
    pub hostname: String,
    /// Offers consumed.
    pub offer_ids: Vec<String>,
    /// The executor.
    pub executor: ExecutorChoice,
    /// Tasks.
    pub tasks: Vec<LaunchTask>,
    /// `refuse_seconds` for what the ACCEPT leaves unused.
    pub refuse_seconds: f64,
}

/// A pod phase the scheduler writes from Mesos task states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhaseChange {
    /// `Running`, only if the pod is still `Pending`.
    Running,
    /// `Succeeded`, only if the pod has not ended.
    Succeeded,
    /// `Failed` with a reason and message, only if the pod has not ended.
    Failed {
        /// CamelCase reason (`TaskLost`).
        reason: String,
        /// Message.
        message: String,
    },
}

/// Event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

impl EventType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// A Node the scheduler makes sure exists for an agent.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    /// Node name (agent hostname).
    pub name: String,
    /// Agent ID.
    pub agent_id: String,
    /// Labels (hostname and agent attributes).
    pub labels: Vec<(String, String)>,
    /// Resources seen for the agent (largest offer so far).
    pub capacity: Vec<Resource>,
}

/// Something the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// ACCEPT offers with LAUNCH operations.
    Accept(Accept),
    /// DECLINE offers.
    Decline {
        /// Offers.
        offer_ids: Vec<String>,
        /// Filter.
        refuse_seconds: f64,
    },
    /// REVIVE (all roles).
    Revive,
    /// SUPPRESS (all roles).
    Suppress,
    /// KILL a task.
    Kill {
        /// Task.
        task_id: String,
        /// Agent, if known.
        agent_id: Option<String>,
        /// Kill grace period.
        grace: Duration,
    },
    /// ACKNOWLEDGE an update.
    Acknowledge {
        /// Task.
        task_id: String,
        /// Agent.
        agent_id: String,
        /// UUID of the update.
        uuid: Vec<u8>,
    },
    /// RECONCILE these tasks; implicit when empty.
    Reconcile {
        /// (task, agent).
        tasks: Vec<(String, Option<String>)>,
    },
    /// POST a Binding with these annotations (reported back by [`Input::BindDone`]).
    Bind {
        /// The pod.
        pod: PodRef,
        /// Node.
        node: String,
        /// Task.
        task_id: String,
        /// Annotations for the pod.
        annotations: Vec<(String, String)>,
    },
    /// Set PodScheduled=False (reason Unschedulable) with this message and record a
    /// FailedScheduling event.
    Unschedulable {
        /// The pod.
        pod: PodRef,
        /// Why.
        message: String,
    },
    /// Record an event on a pod.
    Event {
        /// The pod.
        pod: PodRef,
        /// Type.
        kind: EventType,
        /// CamelCase reason.
        reason: &'static str,
        /// Message.
        message: String,
    },
    /// Write a pod phase (conditional, see [`PhaseChange`]).
    SetPhase {
        /// The pod.
        pod: PodRef,
        /// The change.
        change: PhaseChange,
    },
    /// Complete a graceful deletion: delete the pod with grace 0 (if its UID still matches).
    DeletePod {
        /// The pod.
        pod: PodRef,
    },
    /// Create or update the Node of an agent.
    EnsureNode(NodeSpec),
    /// Send a framework message to an executor.
    Message {
        /// Agent.
        agent_id: String,
        /// Executor.
        executor_id: String,
        /// Payload.
        data: Vec<u8>,
    },
}
