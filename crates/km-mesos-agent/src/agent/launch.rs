//! Launching: executors and command tasks from RUN_TASK / RUN_TASK_GROUP,
//! their sandboxes, fetching, and the processes that run them.

use super::*;

impl Agent {
    pub(super) fn new_sandbox(&self) -> impl FnOnce(&str, &str, &str) -> PathBuf + '_ {
        let agent_id = self.core().agent_id.clone().unwrap_or_else(|| "unregistered".to_owned());
        move |fw, ex, c| self.sandbox_path(&agent_id, fw, ex, c)
    }

    pub(super) fn refuse(self: &Arc<Self>, fw: &str, tasks: &[TaskInfo], message: String) {
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

    pub(super) fn run_task(self: &Arc<Self>, fw_info: FrameworkInfo, task: TaskInfo) {
        let fw = state::framework_id(&fw_info);
        let sandbox = self.new_sandbox();
        let decision = self.core().registry.run_task(&fw_info, task.clone(), sandbox);
        self.apply_run(&fw, decision, &[task]);
    }

    pub(super) fn run_task_group(
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

    pub(super) fn apply_run(self: &Arc<Self>, fw: &str, decision: RunDecision, tasks: &[TaskInfo]) {
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

    pub(super) async fn start_executor(self: Arc<Self>, fw: String, ex: String) {
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
            let user = info.command.as_ref().and_then(|c| c.user.as_deref()).unwrap_or("");
            let cache = Some((&self.fetch_cache, user));
            fetch::fetch_all(&self.fetch_http, &uris, &dir, self.cfg.fetcher_max_size, cache)
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

    pub(super) fn spawn_custom(
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

    /// The built-in command executor: STARTING, RUNNING, then the outcome.
    pub(super) async fn run_command(
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
}
