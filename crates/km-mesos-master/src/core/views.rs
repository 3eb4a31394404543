//! Views: the operator API's answers and the legacy /state document.

use super::*;

impl Master {
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

    pub(super) fn agent_view(&self, id: &str) -> Option<op::response::get_agents::Agent> {
        let a = self.agents.get(id)?;
        let mut info = a.info.clone();
        info.resources = resources_to_proto(&a.total, Format::Endpoint);
        Some(op::response::get_agents::Agent {
            agent_info: info,
            active: a.conn.is_some(),
            version: a.version.clone(),
            pid: Some(a.pid()),
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

    pub(super) fn framework_view(
        &self,
        id: &str,
    ) -> Option<op::response::get_frameworks::Framework> {
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
                    a.executors.values().map(|Executor { info, .. }| {
                        op::response::get_executors::Executor {
                            executor_info: info.clone(),
                            agent_id: v1::AgentId { value: a.id().into() },
                        }
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
        let agents: Vec<serde_json::Value> =
            self.agents.values().map(|a| self.legacy_agent(a)).collect();
        let frameworks: Vec<serde_json::Value> =
            self.frameworks.iter().map(|(id, f)| self.legacy_framework(id, f)).collect();
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
