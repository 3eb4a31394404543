//! What the agent runs: frameworks, their executors and tasks, and the
//! decisions taken on them (where a task goes, what a KILL means, which tasks
//! an exiting executor leaves behind). Pure and synchronous; the async
//! runtime in [`crate::agent`] applies the decisions.

use std::collections::BTreeMap;
use std::path::PathBuf;

use km_mesos::v1::{
    ExecutorId, ExecutorInfo, FrameworkId, FrameworkInfo, TaskGroupInfo, TaskInfo, TaskState,
    executor_info, framework_info,
};

/// Mesos `isTerminalState`.
pub fn is_terminal(state: i32) -> bool {
    matches!(
        TaskState::try_from(state),
        Ok(TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskLost
            | TaskState::TaskError
            | TaskState::TaskDropped
            | TaskState::TaskGone
            | TaskState::TaskGoneByOperator)
    )
}

/// Whether the framework has a capability.
pub fn has_capability(info: &FrameworkInfo, cap: framework_info::capability::Type) -> bool {
    info.capabilities.iter().any(|c| c.r#type == Some(cap as i32))
}

/// The id of a framework as a string (empty when the master left it out).
pub fn framework_id(info: &FrameworkInfo) -> String {
    info.id.as_ref().map(|id| id.value.clone()).unwrap_or_default()
}

/// Built-in command executor or a framework's own process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExecutorKind {
    /// The agent runs `task.command` itself (executor id = task id).
    Command,
    /// `ExecutorInfo.command` is launched and subscribes over HTTP.
    Custom,
}

/// Life cycle of an executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// Started (or being fetched), not yet subscribed.
    Launching,
    /// Subscribed (for command executors: the command runs).
    Running,
    /// SHUTDOWN sent; waiting for the process to exit or the grace period.
    Terminating,
}

/// Work handed to an executor.
#[derive(Debug, Clone, PartialEq)]
pub enum Launch {
    /// LAUNCH.
    Task(TaskInfo),
    /// LAUNCH_GROUP.
    Group(TaskGroupInfo),
}

impl Launch {
    fn task_ids(&self) -> Vec<String> {
        match self {
            Launch::Task(t) => vec![t.task_id.value.clone()],
            Launch::Group(g) => g.tasks.iter().map(|t| t.task_id.value.clone()).collect(),
        }
    }
}

/// A task the agent knows.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEntry {
    /// As launched.
    pub info: TaskInfo,
    /// Latest state (STAGING until the first update).
    pub state: TaskState,
    /// Handed to the executor (LAUNCH sent).
    pub delivered: bool,
}

/// An executor and its tasks.
#[derive(Debug, Clone)]
pub struct Executor {
    /// What to run (synthesised for command tasks).
    pub info: ExecutorInfo,
    /// Command or custom.
    pub kind: ExecutorKind,
    /// The container id (a fresh uuid per run).
    pub container_id: String,
    /// The sandbox.
    pub directory: PathBuf,
    /// Where it is in its life.
    pub phase: Phase,
    /// Work not yet delivered (the executor has not subscribed).
    pub queued: Vec<Launch>,
    /// Every task of this executor, queued or delivered.
    pub tasks: BTreeMap<String, TaskEntry>,
    /// The process (group leader) id, once started.
    pub pid: Option<i32>,
}

/// A framework with executors on this agent.
#[derive(Debug, Clone)]
pub struct Framework {
    /// As last sent by the master.
    pub info: FrameworkInfo,
    /// By executor id.
    pub executors: BTreeMap<String, Executor>,
}

/// What to do with a RUN_TASK / RUN_TASK_GROUP.
#[derive(Debug, Clone, PartialEq)]
pub enum RunDecision {
    /// A new executor was registered: start it (fetch, process).
    StartExecutor {
        /// Its id.
        executor_id: String,
    },
    /// The executor is starting: the work waits for its SUBSCRIBE.
    Queued,
    /// The executor is subscribed: send this LAUNCH / LAUNCH_GROUP now.
    Deliver {
        /// To whom.
        executor_id: String,
        /// What.
        launch: Launch,
    },
    /// Refused; tasks get TASK_FAILED with this message.
    Refused(String),
}

/// What a KILL_TASK means.
#[derive(Debug, Clone, PartialEq)]
pub enum KillDecision {
    /// Not delivered yet: removed; these tasks get TASK_KILLED
    /// (REASON_TASK_KILLED_DURING_LAUNCH).
    KilledDuringLaunch(Vec<String>),
    /// The agent does not know the task: TASK_LOST / TASK_DROPPED.
    Unknown,
    /// A command task: stop its process.
    Command {
        /// Executor id (= task id).
        executor_id: String,
    },
    /// Send KILL to this executor.
    Forward {
        /// Executor id.
        executor_id: String,
    },
    /// Already terminal: nothing to do.
    AlreadyTerminal,
}

/// Bookkeeping of everything the agent runs.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// By framework id.
    pub frameworks: BTreeMap<String, Framework>,
}

/// Executor id and info of the built-in command executor for a task.
pub fn command_executor_info(framework_id: &str, task: &TaskInfo) -> ExecutorInfo {
    let mut info = ExecutorInfo {
        executor_id: ExecutorId { value: task.task_id.value.clone() },
        framework_id: Some(FrameworkId { value: framework_id.to_owned() }),
        name: Some(format!("Command Executor (Task: {})", task.task_id.value)),
        command: Some(task.command.clone().unwrap_or_default()),
        ..ExecutorInfo::default()
    };
    info.set_type(executor_info::Type::Default);
    info
}

impl Registry {
    /// Looks up an executor.
    pub fn executor(&self, fw: &str, ex: &str) -> Option<&Executor> {
        self.frameworks.get(fw).and_then(|f| f.executors.get(ex))
    }

    /// Looks up an executor for change.
    pub fn executor_mut(&mut self, fw: &str, ex: &str) -> Option<&mut Executor> {
        self.frameworks.get_mut(fw).and_then(|f| f.executors.get_mut(ex))
    }

    /// The executor running (or about to run) a task.
    pub fn executor_of_task(&self, fw: &str, task: &str) -> Option<&Executor> {
        self.frameworks.get(fw)?.executors.values().find(|e| e.tasks.contains_key(task))
    }

    fn framework_entry(&mut self, info: &FrameworkInfo) -> &mut Framework {
        let id = framework_id(info);
        let fw = self
            .frameworks
            .entry(id)
            .or_insert_with(|| Framework { info: info.clone(), executors: BTreeMap::new() });
        fw.info = info.clone();
        fw
    }

    fn run(
        &mut self,
        framework: &FrameworkInfo,
        mut executor: ExecutorInfo,
        kind: ExecutorKind,
        launch: Launch,
        tasks: Vec<TaskInfo>,
        sandbox: impl FnOnce(&str, &str, &str) -> PathBuf,
    ) -> RunDecision {
        let fw_id = framework_id(framework);
        if tasks.iter().any(|t| self.executor_of_task(&fw_id, &t.task_id.value).is_some()) {
            return RunDecision::Refused("a task with this id already runs on this agent".into());
        }
        let ex_id = executor.executor_id.value.clone();
        if executor.framework_id.is_none() {
            executor.framework_id = Some(FrameworkId { value: fw_id.clone() });
        }
        let fw = self.framework_entry(framework);
        let entries = tasks.into_iter().map(|t| {
            (
                t.task_id.value.clone(),
                TaskEntry { info: t, state: TaskState::TaskStaging, delivered: false },
            )
        });
        match fw.executors.get_mut(&ex_id) {
            Some(ex) if ex.phase == Phase::Terminating || kind == ExecutorKind::Command => {
                RunDecision::Refused(format!("executor '{ex_id}' is terminating"))
            }
            Some(ex) if ex.phase == Phase::Launching => {
                ex.tasks.extend(entries);
                ex.queued.push(launch);
                RunDecision::Queued
            }
            Some(ex) => {
                ex.tasks.extend(entries.map(|(id, mut e)| {
                    e.delivered = true;
                    (id, e)
                }));
                RunDecision::Deliver { executor_id: ex_id, launch }
            }
            None => {
                let container_id = uuid::Uuid::new_v4().to_string();
                let directory = sandbox(&fw_id, &ex_id, &container_id);
                fw.executors.insert(
                    ex_id.clone(),
                    Executor {
                        info: executor,
                        kind,
                        container_id,
                        directory,
                        phase: Phase::Launching,
                        queued: vec![launch],
                        tasks: entries.collect(),
                        pid: None,
                    },
                );
                RunDecision::StartExecutor { executor_id: ex_id }
            }
        }
    }

    /// RUN_TASK. `sandbox(fw, executor, container)` names the sandbox of a new executor.
    pub fn run_task(
        &mut self,
        framework: &FrameworkInfo,
        task: TaskInfo,
        sandbox: impl FnOnce(&str, &str, &str) -> PathBuf,
    ) -> RunDecision {
        let fw_id = framework_id(framework);
        let (executor, kind) = match (&task.executor, &task.command) {
            (Some(executor), _) => (executor.clone(), ExecutorKind::Custom),
            (None, Some(_)) => (command_executor_info(&fw_id, &task), ExecutorKind::Command),
            (None, None) => {
                return RunDecision::Refused("task has neither an executor nor a command".into());
            }
        };
        if kind == ExecutorKind::Custom && executor.command.is_none() {
            return RunDecision::Refused("custom executor without a command".into());
        }
        let launch = Launch::Task(task.clone());
        self.run(framework, executor, kind, launch, vec![task], sandbox)
    }

    /// RUN_TASK_GROUP.
    pub fn run_task_group(
        &mut self,
        framework: &FrameworkInfo,
        executor: ExecutorInfo,
        group: TaskGroupInfo,
        sandbox: impl FnOnce(&str, &str, &str) -> PathBuf,
    ) -> RunDecision {
        if executor.command.is_none() {
            return RunDecision::Refused(
                "task groups need an executor with a command (km has no built-in default executor)"
                    .into(),
            );
        }
        let tasks = group.tasks.clone();
        self.run(framework, executor, ExecutorKind::Custom, Launch::Group(group), tasks, sandbox)
    }

    /// The executor subscribed: returns the queued work to deliver, or why not.
    pub fn subscribe(&mut self, fw: &str, ex: &str) -> Result<Vec<Launch>, &'static str> {
        let fw_entry = self.frameworks.get_mut(fw).ok_or("Framework cannot be found")?;
        let executor = fw_entry.executors.get_mut(ex).ok_or("Executor cannot be found")?;
        if executor.phase == Phase::Launching {
            executor.phase = Phase::Running;
        }
        let queued = std::mem::take(&mut executor.queued);
        for launch in &queued {
            for id in launch.task_ids() {
                if let Some(t) = executor.tasks.get_mut(&id) {
                    t.delivered = true;
                }
            }
        }
        Ok(queued)
    }

    /// KILL_TASK.
    pub fn kill(&mut self, fw: &str, task: &str) -> KillDecision {
        let Some(executor) = self
            .frameworks
            .get_mut(fw)
            .and_then(|f| f.executors.values_mut().find(|e| e.tasks.contains_key(task)))
        else {
            return KillDecision::Unknown;
        };
        let entry = &executor.tasks[task];
        if is_terminal(entry.state as i32) {
            return KillDecision::AlreadyTerminal;
        }
        let executor_id = executor.info.executor_id.value.clone();
        if executor.kind == ExecutorKind::Command {
            return KillDecision::Command { executor_id };
        }
        if entry.delivered {
            return KillDecision::Forward { executor_id };
        }
        let Some(pos) =
            executor.queued.iter().position(|l| l.task_ids().iter().any(|id| id == task))
        else {
            return KillDecision::Forward { executor_id };
        };
        let ids = executor.queued.remove(pos).task_ids();
        for id in &ids {
            if let Some(t) = executor.tasks.get_mut(id) {
                t.state = TaskState::TaskKilled;
            }
        }
        KillDecision::KilledDuringLaunch(ids)
    }

    /// Records a task's latest state.
    pub fn set_task_state(&mut self, fw: &str, task: &str, state: TaskState) {
        if let Some(f) = self.frameworks.get_mut(fw)
            && let Some(t) = f.executors.values_mut().find_map(|e| e.tasks.get_mut(task))
        {
            t.state = state;
        }
    }

    /// Marks an executor as terminating; returns whether it was subscribed
    /// (then it gets a SHUTDOWN event) or `None` if unknown.
    pub fn begin_shutdown(&mut self, fw: &str, ex: &str) -> Option<Phase> {
        let executor = self.executor_mut(fw, ex)?;
        let before = executor.phase;
        executor.phase = Phase::Terminating;
        Some(before)
    }

    /// The executor is gone: removes it and returns its non-terminal tasks
    /// (for TASK_FAILED / REASON_EXECUTOR_TERMINATED).
    pub fn executor_terminated(&mut self, fw: &str, ex: &str) -> Vec<TaskInfo> {
        let Some(f) = self.frameworks.get_mut(fw) else { return Vec::new() };
        let Some(executor) = f.executors.remove(ex) else { return Vec::new() };
        if f.executors.is_empty() {
            self.frameworks.remove(fw);
        }
        executor
            .tasks
            .into_values()
            .filter(|t| !is_terminal(t.state as i32))
            .map(|t| t.info)
            .collect()
    }

    /// Executor ids of a framework.
    pub fn executor_ids(&self, fw: &str) -> Vec<String> {
        self.frameworks.get(fw).map(|f| f.executors.keys().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use km_mesos::v1::{CommandInfo, TaskId, framework_info::Capability};

    fn fw() -> FrameworkInfo {
        FrameworkInfo {
            id: Some(FrameworkId { value: "fw".into() }),
            name: "f".into(),
            user: "u".into(),
            ..Default::default()
        }
    }

    fn command_task(id: &str) -> TaskInfo {
        TaskInfo {
            task_id: TaskId { value: id.into() },
            name: id.into(),
            command: Some(CommandInfo { value: Some("true".into()), ..Default::default() }),
            ..Default::default()
        }
    }

    fn custom_task(id: &str, ex: &str) -> TaskInfo {
        TaskInfo {
            task_id: TaskId { value: id.into() },
            name: id.into(),
            executor: Some(ExecutorInfo {
                executor_id: ExecutorId { value: ex.into() },
                command: Some(CommandInfo { value: Some("./exec".into()), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn dir(fw: &str, ex: &str, c: &str) -> PathBuf {
        PathBuf::from(format!("/w/{fw}/{ex}/{c}"))
    }

    #[test]
    fn command_tasks_get_their_own_executor() {
        let mut r = Registry::default();
        assert_eq!(
            r.run_task(&fw(), command_task("t1"), dir),
            RunDecision::StartExecutor { executor_id: "t1".into() }
        );
        let ex = r.executor("fw", "t1").unwrap();
        assert_eq!(ex.kind, ExecutorKind::Command);
        assert_eq!(ex.info.framework_id.as_ref().unwrap().value, "fw");
        assert!(ex.directory.starts_with("/w/fw/t1/"));
        assert!(matches!(r.run_task(&fw(), command_task("t1"), dir), RunDecision::Refused(_)));
        assert_eq!(r.kill("fw", "t1"), KillDecision::Command { executor_id: "t1".into() });
    }

    #[test]
    fn custom_executor_queues_until_subscribe_then_delivers() {
        let mut r = Registry::default();
        assert_eq!(
            r.run_task(&fw(), custom_task("t1", "e"), dir),
            RunDecision::StartExecutor { executor_id: "e".into() }
        );
        assert_eq!(r.run_task(&fw(), custom_task("t2", "e"), dir), RunDecision::Queued);
        assert_eq!(r.subscribe("fw", "nope"), Err("Executor cannot be found"));
        assert_eq!(r.subscribe("other", "e"), Err("Framework cannot be found"));
        let queued = r.subscribe("fw", "e").unwrap();
        assert_eq!(queued.len(), 2);
        assert!(matches!(
            r.run_task(&fw(), custom_task("t3", "e"), dir),
            RunDecision::Deliver { .. }
        ));
        assert_eq!(r.kill("fw", "t3"), KillDecision::Forward { executor_id: "e".into() });
    }

    #[test]
    fn kill_paths() {
        let mut r = Registry::default();
        r.run_task(&fw(), custom_task("t1", "e"), dir);
        let group = TaskGroupInfo { tasks: vec![custom_task("g1", "e"), custom_task("g2", "e")] };
        let executor = custom_task("x", "e").executor.unwrap();
        assert_eq!(r.run_task_group(&fw(), executor, group, dir), RunDecision::Queued);
        // Killing one task of a queued group kills the whole group.
        assert_eq!(
            r.kill("fw", "g2"),
            KillDecision::KilledDuringLaunch(vec!["g1".into(), "g2".into()])
        );
        assert_eq!(r.kill("fw", "g1"), KillDecision::AlreadyTerminal);
        assert_eq!(r.kill("fw", "t1"), KillDecision::KilledDuringLaunch(vec!["t1".into()]));
        assert_eq!(r.kill("fw", "nope"), KillDecision::Unknown);
        assert_eq!(r.kill("other", "t1"), KillDecision::Unknown);
        assert!(r.subscribe("fw", "e").unwrap().is_empty());
    }

    #[test]
    fn executor_exit_leaves_its_live_tasks() {
        let mut r = Registry::default();
        r.run_task(&fw(), custom_task("t1", "e"), dir);
        r.run_task(&fw(), custom_task("t2", "e"), dir);
        r.subscribe("fw", "e").unwrap();
        r.set_task_state("fw", "t1", TaskState::TaskFinished);
        r.set_task_state("fw", "t2", TaskState::TaskRunning);
        assert_eq!(r.begin_shutdown("fw", "e"), Some(Phase::Running));
        assert!(matches!(r.run_task(&fw(), custom_task("t3", "e"), dir), RunDecision::Refused(_)));
        let left = r.executor_terminated("fw", "e");
        assert_eq!(left.iter().map(|t| t.task_id.value.as_str()).collect::<Vec<_>>(), ["t2"]);
        assert!(r.frameworks.is_empty());
        assert_eq!(r.begin_shutdown("fw", "e"), None);
    }

    #[test]
    fn group_needs_a_command_and_capabilities_are_read() {
        let mut r = Registry::default();
        let group = TaskGroupInfo { tasks: vec![custom_task("g1", "e")] };
        let executor =
            ExecutorInfo { executor_id: ExecutorId { value: "e".into() }, ..Default::default() };
        assert!(matches!(r.run_task_group(&fw(), executor, group, dir), RunDecision::Refused(_)));
        let mut info = fw();
        assert!(!has_capability(&info, framework_info::capability::Type::PartitionAware));
        info.capabilities.push(Capability {
            r#type: Some(framework_info::capability::Type::PartitionAware as i32),
        });
        assert!(has_capability(&info, framework_info::capability::Type::PartitionAware));
        assert!(
            is_terminal(TaskState::TaskDropped as i32)
                && !is_terminal(TaskState::TaskKilling as i32)
        );
    }
}
