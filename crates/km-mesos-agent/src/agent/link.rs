//! The link to the master, agent side: the SUBSCRIBE call, posting calls,
//! registration and disconnection, the status update retry loop, and the
//! master's events (including its pings).

use super::*;

impl Agent {
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

    pub(super) fn send_update(self: &Arc<Self>, out: Outgoing) {
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
}
