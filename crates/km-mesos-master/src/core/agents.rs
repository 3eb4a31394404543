//! Agents: registration, agent calls (status updates), disconnection,
//! unreachable and gone agents, and what becomes of their tasks.

use super::*;

impl Master {
    /// Records the address an agent's SUBSCRIBE came from.
    pub(crate) fn set_agent_ip(&mut self, id: &str, ip: std::net::IpAddr) {
        if let Some(a) = self.agents.get_mut(id) {
            a.ip = Some(ip);
        }
    }

    /// `ip:port` of a registered agent's HTTP API: the IP its SUBSCRIBE came from, never a
    /// name the agent merely claims (so no agent can make the master fetch from elsewhere).
    /// None for agents without a connection of their own (simulated ones).
    pub(crate) fn agent_endpoint(&self, id: &str) -> Option<String> {
        self.agents.get(id).filter(|a| a.ip.is_some()).map(Agent::endpoint)
    }

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
            last_seen: now,
            last_ping: now,
            capabilities: subscribe.capabilities,
            version: subscribe.version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            registered_time: now_s,
            reregistered_time: None,
            executors: BTreeMap::new(),
            ip: None,
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
            let resources = bag(&ex.resources).unwrap_or_default();
            let role = self.role_of(&key.0, &ex.resources);
            if let Some(a) = self.agents.get_mut(&id)
                && !a.executors.contains_key(&key)
            {
                a.used.add(&resources);
                a.executors.insert(
                    key.clone(),
                    Executor { info: ex.clone(), resources: resources.clone(), role: role.clone() },
                );
                self.charge(&key.0, &role, &resources);
            }
        }
        for t in subscribe.tasks {
            let key = (t.framework_id.value.clone(), t.task_id.value.clone());
            self.unreachable_tasks.remove(&key);
            if self.tasks.contains_key(&key) || is_terminal(t.state()) {
                continue;
            }
            let resources = bag(&t.resources).unwrap_or_default();
            let role = self.role_of(&key.0, &t.resources);
            if let Some(a) = self.agents.get_mut(&id) {
                a.used.add(&resources);
            }
            self.charge(&key.0, &role, &resources);
            self.tasks.insert(key, Task { task: t, role, resources, terminal_uuid: None });
        }
        let mut registered = agent::Event {
            registered: Some(agent::event::Registered {
                agent_id: v1::AgentId { value: id.clone() },
                master_info: self.config.info.clone(),
                heartbeat_interval_seconds: Some(self.config.agent_ping_interval.as_secs_f64()),
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
        let Some(agent) = self.agents.get_mut(&agent_id) else {
            return Err(Rejection::new(400, format!("Agent {agent_id} is not registered")));
        };
        agent.last_seen = now;
        match c.r#type() {
            agent::call::Type::Pong => {}
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
                    && let Some(ex) = a.executors.remove(&key)
                {
                    a.used.subtract(&ex.resources);
                    self.release(&key.0, &ex.role, &ex.resources);
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

    pub(super) fn status_update(
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
                let (res, role) = (t.resources.clone(), t.role.clone());
                if let Some(a) = self.agents.get_mut(agent_id) {
                    a.used.subtract(&res);
                }
                self.release(fw_id, &role, &res);
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

    pub(super) fn agent_disconnected(
        &mut self,
        id: &str,
        conn: ConnId,
        now: Instant,
        wall: SystemTime,
    ) {
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
    pub(super) fn lose_task(
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
        self.release(fw_id, &t.role, &t.resources);
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
    pub(super) fn rescind_agent_offers(&mut self, agent_id: &str, now: Instant) {
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
    pub(super) fn lose_agent_tasks(
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

    pub(super) fn mark_unreachable(&mut self, id: &str, now: Instant, wall: SystemTime) {
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

    pub(super) fn remove_agent(&mut self, id: &str, now: Instant, wall: SystemTime) {
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

    pub(super) fn broadcast_failure(&mut self, agent_id: &str) {
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
}
