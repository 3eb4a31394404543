//! Killing and shutting down: tasks with their kill policies, executors,
//! and what happens when an executor exits.

use super::*;

impl Agent {
    pub(super) fn kill_task(
        self: &Arc<Self>,
        fw: &str,
        task_id: &TaskId,
        policy: Option<KillPolicy>,
    ) {
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
    pub(super) fn kill_command(&self, fw: &str, ex: &str, grace: Duration) {
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
            self.checkpoints.remove_executor(&self.cfg.work_dir, fw, ex);
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
}
