//! Checkpoints, the graceful stop, and recovery of checkpointed executors
//! after a restart of the agent.

use super::*;

impl Agent {
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
        if let Err(err) = self.checkpoints.save_executor(&self.cfg.work_dir, &f.info, e, pending) {
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
                self.checkpoints.remove_executor(&self.cfg.work_dir, &fw, &ex);
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
