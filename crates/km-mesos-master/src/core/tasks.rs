//! Tasks after launch: KILL, ACKNOWLEDGE, completion and reconciliation.

use super::*;

impl Master {
    pub(super) fn kill(&mut self, fw_id: &str, k: call::Kill, wall: SystemTime) {
        let key = (fw_id.to_owned(), k.task_id.value.clone());
        match self.tasks.get(&key) {
            Some(t) => {
                if let Some(given) = &k.agent_id
                    && given.value != t.task.agent_id.value
                {
                    return; // Wrong agent for a known task: ignored.
                }
                let agent_id = t.task.agent_id.value.clone();
                let mut e = agent::Event {
                    kill_task: Some(agent::event::KillTask {
                        framework_id: v1::FrameworkId { value: fw_id.into() },
                        task_id: k.task_id,
                        kill_policy: k.kill_policy,
                    }),
                    ..Default::default()
                };
                e.set_type(agent::event::Type::KillTask);
                self.send_agent(&agent_id, e);
            }
            None => self.reconcile(
                fw_id,
                vec![call::reconcile::Task { task_id: k.task_id, agent_id: k.agent_id }],
                wall,
            ),
        }
    }

    pub(super) fn acknowledge(&mut self, fw_id: &str, a: call::Acknowledge) {
        let key = (fw_id.to_owned(), a.task_id.value.clone());
        let retire = self
            .tasks
            .get(&key)
            .is_some_and(|t| t.terminal_uuid.as_deref() == Some(a.uuid.as_slice()));
        let mut e = agent::Event {
            acknowledge: Some(agent::event::Acknowledge {
                framework_id: v1::FrameworkId { value: fw_id.into() },
                task_id: a.task_id,
                uuid: a.uuid,
            }),
            ..Default::default()
        };
        e.set_type(agent::event::Type::Acknowledge);
        self.send_agent(&a.agent_id.value, e);
        if retire && let Some(t) = self.tasks.remove(&key) {
            self.complete_task(t.task);
        }
    }

    pub(super) fn complete_task(&mut self, task: v1::Task) {
        self.completed_tasks.push_back(task);
        while self.completed_tasks.len() > self.config.max_completed_tasks {
            self.completed_tasks.pop_front();
        }
    }

    pub(super) fn reconcile(
        &mut self,
        fw_id: &str,
        tasks: Vec<call::reconcile::Task>,
        wall: SystemTime,
    ) {
        let pa = self.frameworks.get(fw_id).is_some_and(|f| f.caps.partition_aware);
        let mut answers = Vec::new();
        let status_of = |t: &Task, ts: f64| {
            let mut s = t.task.statuses.last().cloned().unwrap_or_else(|| v1::TaskStatus {
                task_id: t.task.task_id.clone(),
                ..Default::default()
            });
            let state = t
                .task
                .status_update_state
                .map(|_| t.task.status_update_state())
                .unwrap_or(t.task.state());
            s.set_state(state);
            s.agent_id = Some(t.task.agent_id.clone());
            s.executor_id = t.task.executor_id.clone();
            s.uuid = None;
            s.timestamp = Some(ts);
            s
        };
        let ts = epoch_secs(wall);
        if tasks.is_empty() {
            for ((f, _), t) in &self.tasks {
                if f == fw_id {
                    answers.push(status_of(t, ts));
                }
            }
        } else {
            for rt in tasks {
                let key = (fw_id.to_owned(), rt.task_id.value.clone());
                if let Some(t) = self.tasks.get(&key) {
                    answers.push(status_of(t, ts));
                    continue;
                }
                let agent = rt.agent_id.as_ref().map(|a| a.value.as_str());
                // After a master restart the truth is on agents not yet back: say nothing.
                let pending_recovery = match agent {
                    Some(a) => self.recovered.contains_key(a),
                    None => !self.recovered.is_empty(),
                };
                if pending_recovery {
                    continue;
                }
                let (state, unreachable_time) = match agent {
                    Some(a) if self.agents.contains_key(a) => {
                        (if pa { TaskState::TaskGone } else { TaskState::TaskLost }, None)
                    }
                    Some(a) if self.gone.contains(a) => {
                        (if pa { TaskState::TaskGoneByOperator } else { TaskState::TaskLost }, None)
                    }
                    Some(a) if self.unreachable.contains_key(a) => {
                        let when = self.unreachable[a].1;
                        (
                            if pa { TaskState::TaskUnreachable } else { TaskState::TaskLost },
                            Some(v1::TimeInfo { nanoseconds: (when * 1e9) as i64 }),
                        )
                    }
                    _ => (if pa { TaskState::TaskUnknown } else { TaskState::TaskLost }, None),
                };
                let mut s = v1::TaskStatus {
                    task_id: rt.task_id,
                    agent_id: rt.agent_id,
                    timestamp: Some(ts),
                    unreachable_time,
                    ..Default::default()
                };
                s.set_state(state);
                answers.push(s);
            }
        }
        for mut s in answers {
            s.set_source(Source::Master);
            s.set_reason(Reason::Reconciliation);
            s.message = Some("Reconciliation: Latest task state".into());
            self.send_framework(fw_id, Self::update_event(s));
        }
    }
}
