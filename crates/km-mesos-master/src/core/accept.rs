//! ACCEPT: offers turned into launched tasks and task groups, with every check
//! Mesos makes before a task reaches an agent.

use super::*;

impl Master {
    pub(super) fn accept(
        &mut self,
        fw_id: &str,
        accept: call::Accept,
        now: Instant,
        wall: SystemTime,
    ) {
        let refuse = refuse_seconds(accept.filters.as_ref());
        let launched_tasks: Vec<(String, Option<String>)> = accept
            .operations
            .iter()
            .flat_map(|op| {
                let mut ids = Vec::new();
                if let Some(l) = &op.launch {
                    ids.extend(
                        l.task_infos
                            .iter()
                            .map(|t| (t.task_id.value.clone(), Some(t.agent_id.value.clone()))),
                    );
                }
                if let Some(g) = &op.launch_group {
                    ids.extend(
                        g.task_group
                            .tasks
                            .iter()
                            .map(|t| (t.task_id.value.clone(), Some(t.agent_id.value.clone()))),
                    );
                }
                ids
            })
            .collect();
        if let Err(problem) = self.validate_offers(fw_id, &accept.offer_ids) {
            let pa = self.frameworks.get(fw_id).is_some_and(|f| f.caps.partition_aware);
            let state = if pa { TaskState::TaskDropped } else { TaskState::TaskLost };
            for (task_id, agent_id) in launched_tasks {
                let s = self.master_status(
                    &task_id,
                    state,
                    Reason::InvalidOffers,
                    format!("Task launched with invalid offers: {problem}"),
                    agent_id.as_deref(),
                    wall,
                );
                self.send_framework(fw_id, Self::update_event(s));
            }
            // Still-valid offers of the call go back without a filter.
            for o in &accept.offer_ids {
                if self.offers.get(&o.value).is_some_and(|r| r.framework_id == fw_id) {
                    self.recover_offer(&o.value, None, now);
                }
            }
            return;
        }
        // Take the offers: their resources form the pool the operations use.
        let mut pool = Resources::default();
        let mut agent_id = String::new();
        let mut role = String::new();
        for o in &accept.offer_ids {
            if let Some(rec) = self.offers.remove(&o.value) {
                pool.add(&rec.resources);
                agent_id = rec.agent_id;
                role = rec.role;
                if let Some(a) = self.agents.get_mut(&agent_id) {
                    a.offered.subtract(&rec.resources);
                }
                if let Some(fw) = self.frameworks.get_mut(fw_id) {
                    fw.offers.remove(&o.value);
                    if let Some(alloc) = fw.allocated.get_mut(&role) {
                        alloc.subtract(&rec.resources);
                    }
                }
            }
        }
        let mut launched_executors: BTreeSet<String> = BTreeSet::new();
        for operation in accept.operations {
            match operation.r#type() {
                v1::offer::operation::Type::Launch => {
                    let Some(launch) = operation.launch else { continue };
                    for task in launch.task_infos {
                        let id_set = operation.id.is_some();
                        match self.validate_task(
                            fw_id,
                            &agent_id,
                            &task,
                            None,
                            id_set,
                            &launched_executors,
                        ) {
                            Ok(needed) if pool.contains(&needed) => {
                                pool.subtract(&needed);
                                if let Some(e) = &task.executor {
                                    launched_executors.insert(e.executor_id.value.clone());
                                }
                                self.launch(fw_id, &agent_id, &role, task, None, needed, wall);
                            }
                            Ok(needed) => {
                                let msg = format!(
                                    "Task uses more resources {needed} than available {pool}"
                                );
                                self.task_error(
                                    fw_id,
                                    &agent_id,
                                    &task.task_id.value,
                                    Reason::TaskInvalid,
                                    msg,
                                    wall,
                                );
                            }
                            Err(msg) => self.task_error(
                                fw_id,
                                &agent_id,
                                &task.task_id.value,
                                Reason::TaskInvalid,
                                msg,
                                wall,
                            ),
                        }
                    }
                }
                v1::offer::operation::Type::LaunchGroup => {
                    let Some(group) = operation.launch_group else { continue };
                    let id_set = operation.id.is_some();
                    match self.validate_group(fw_id, &agent_id, &group, id_set, &launched_executors)
                    {
                        Ok(needed) if pool.contains(&needed) => {
                            pool.subtract(&needed);
                            launched_executors.insert(group.executor.executor_id.value.clone());
                            self.launch_group(fw_id, &agent_id, &role, group, needed, wall);
                        }
                        Ok(_) => {
                            for t in &group.task_group.tasks {
                                self.task_error(
                                    fw_id,
                                    &agent_id,
                                    &t.task_id.value,
                                    Reason::TaskGroupInvalid,
                                    "Task group uses more resources than available".into(),
                                    wall,
                                );
                            }
                        }
                        Err(msg) => {
                            for t in &group.task_group.tasks {
                                self.task_error(
                                    fw_id,
                                    &agent_id,
                                    &t.task_id.value,
                                    Reason::TaskGroupInvalid,
                                    msg.clone(),
                                    wall,
                                );
                            }
                        }
                    }
                }
                other => {
                    tracing::warn!(framework_id = %fw_id, operation = ?other, "offer operation not supported by km mesos-master; ignored");
                }
            }
        }
        // The rest goes back to the agent, refused for a while.
        if !pool.is_empty()
            && let Some(fw) = self.frameworks.get_mut(fw_id)
            && let Some(refuse) = refuse
        {
            fw.filters.add(FilterKey { role, agent_id }, pool, now, now + refuse);
        }
    }

    pub(super) fn validate_offers(
        &self,
        fw_id: &str,
        offer_ids: &[v1::OfferId],
    ) -> Result<(), String> {
        if offer_ids.is_empty() {
            return Err("No offers specified".into());
        }
        let mut seen = BTreeSet::new();
        let mut agent: Option<&str> = None;
        let mut role: Option<&str> = None;
        for o in offer_ids {
            if !seen.insert(&o.value) {
                return Err(format!("Duplicate offer {} in the same call", o.value));
            }
            let Some(rec) = self.offers.get(&o.value) else {
                return Err(format!("Offer {} is no longer valid", o.value));
            };
            if rec.framework_id != fw_id {
                return Err(format!("Offer {} has invalid framework", o.value));
            }
            if agent.is_some_and(|a| a != rec.agent_id) {
                return Err("Aggregated offers must belong to one single agent".into());
            }
            if role.is_some_and(|r| r != rec.role) {
                return Err("Aggregated offers must be allocated to the same role".into());
            }
            agent = Some(&rec.agent_id);
            role = Some(&rec.role);
        }
        Ok(())
    }

    /// Validates one task; returns the resources it needs (its own plus its
    /// executor's when that executor is not running yet).
    pub(super) fn validate_task(
        &self,
        fw_id: &str,
        agent_id: &str,
        task: &v1::TaskInfo,
        group_executor: Option<&v1::ExecutorInfo>,
        operation_id_set: bool,
        launched_executors: &BTreeSet<String>,
    ) -> Result<Resources, String> {
        if operation_id_set {
            return Err("The 'id' field was set in the offer operation; operation feedback is not supported for LAUNCH".into());
        }
        valid_id(&task.task_id.value).map_err(|e| format!("Task ID is invalid: {e}"))?;
        let key = (fw_id.to_owned(), task.task_id.value.clone());
        if self.tasks.contains_key(&key) || self.unreachable_tasks.contains_key(&key) {
            return Err(format!("Task has duplicate ID: {}", task.task_id.value));
        }
        if task.agent_id.value != agent_id {
            return Err(format!("Task uses invalid agent: {}", task.agent_id.value));
        }
        if task.resources.is_empty() {
            return Err("Task uses no resources".into());
        }
        let mut needed =
            bag(&task.resources).map_err(|e| format!("Task uses invalid resources: {e}"))?;
        if let Some(kp) = &task.kill_policy
            && kp.grace_period.as_ref().is_some_and(|g| g.nanoseconds < 0)
        {
            return Err("Task's 'kill_policy.grace_period' must be non-negative".into());
        }
        if group_executor.is_some() {
            if task.command.is_none() && task.container.is_none() {
                // Group tasks may run without a command only with a container image.
            }
            return Ok(needed);
        }
        match (&task.command, &task.executor) {
            (Some(_), Some(_)) => return Err("Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".into()),
            (None, None) => return Err("Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".into()),
            (Some(_), None) => {}
            (None, Some(executor)) => {
                if !matches!(executor.r#type(), v1::executor_info::Type::Unknown | v1::executor_info::Type::Custom) {
                    return Err("'ExecutorInfo.type' must be 'CUSTOM' for LAUNCH".into());
                }
                if executor.command.is_none() {
                    return Err("'ExecutorInfo.command' must be set for a CUSTOM executor".into());
                }
                valid_id(&executor.executor_id.value).map_err(|e| format!("Executor ID is invalid: {e}"))?;
                let running = self.agents.get(agent_id).and_then(|a| a.executors.get(&(fw_id.to_owned(), executor.executor_id.value.clone())));
                match running {
                    Some(Executor { info, .. }) => {
                        if !same_executor(info, executor, fw_id) {
                            return Err(format!(
                                "ExecutorInfo is not compatible with the running executor {}",
                                executor.executor_id.value
                            ));
                        }
                    }
                    None if launched_executors.contains(&executor.executor_id.value) => {}
                    None => {
                        let exec_res = bag(&executor.resources)
                            .map_err(|e| format!("Executor uses invalid resources: {e}"))?;
                        needed.add(&exec_res);
                    }
                }
            }
        }
        Ok(needed)
    }

    pub(super) fn validate_group(
        &self,
        fw_id: &str,
        agent_id: &str,
        group: &v1::offer::operation::LaunchGroup,
        operation_id_set: bool,
        launched_executors: &BTreeSet<String>,
    ) -> Result<Resources, String> {
        let executor = &group.executor;
        if executor.r#type() == v1::executor_info::Type::Unknown {
            return Err("'ExecutorInfo.type' must be set for LAUNCH_GROUP".into());
        }
        if executor.r#type() == v1::executor_info::Type::Default && executor.command.is_some() {
            return Err("'ExecutorInfo.command' must not be set for a DEFAULT executor".into());
        }
        if group.task_group.tasks.is_empty() {
            return Err("Task group is empty".into());
        }
        let mut needed = Resources::default();
        let mut ids = BTreeSet::new();
        for t in &group.task_group.tasks {
            if !ids.insert(&t.task_id.value) {
                return Err(format!("Task group has duplicate task ID {}", t.task_id.value));
            }
            if let Some(e) = &t.executor
                && e.executor_id != executor.executor_id
            {
                return Err("A task in the group has an executor different from the group's".into());
            }
            needed.add(&self.validate_task(
                fw_id,
                agent_id,
                t,
                Some(executor),
                operation_id_set,
                launched_executors,
            )?);
        }
        let key = (fw_id.to_owned(), executor.executor_id.value.clone());
        let running = self.agents.get(agent_id).is_some_and(|a| a.executors.contains_key(&key));
        if !running && !launched_executors.contains(&executor.executor_id.value) {
            needed.add(
                &bag(&executor.resources)
                    .map_err(|e| format!("Executor uses invalid resources: {e}"))?,
            );
        }
        Ok(needed)
    }

    pub(super) fn task_error(
        &mut self,
        fw_id: &str,
        agent_id: &str,
        task_id: &str,
        reason: Reason,
        message: String,
        wall: SystemTime,
    ) {
        tracing::debug!(framework_id = %fw_id, task_id, %message, "task refused");
        let s = self.master_status(
            task_id,
            TaskState::TaskError,
            reason,
            message,
            Some(agent_id),
            wall,
        );
        self.send_framework(fw_id, Self::update_event(s));
    }

    pub(super) fn with_allocation(
        &self,
        fw_id: &str,
        role: &str,
        resources: &[v1::Resource],
    ) -> Vec<v1::Resource> {
        let multi = self.frameworks.get(fw_id).is_some_and(|f| f.caps.multi_role);
        resources
            .iter()
            .cloned()
            .map(|mut r| {
                if multi && r.allocation_info.is_none() {
                    r.allocation_info =
                        Some(v1::resource::AllocationInfo { role: Some(role.into()) });
                }
                r
            })
            .collect()
    }

    /// Records an executor on its agent the first time one of its tasks launches.
    fn add_executor(
        &mut self,
        agent_id: &str,
        fw_id: &str,
        role: &str,
        executor: &v1::ExecutorInfo,
    ) {
        let key = (fw_id.to_owned(), executor.executor_id.value.clone());
        if let Some(a) = self.agents.get_mut(agent_id)
            && !a.executors.contains_key(&key)
        {
            let resources = bag(&executor.resources).unwrap_or_default();
            let info = executor.clone();
            a.executors.insert(key, Executor { info, resources, role: role.to_owned() });
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn launch(
        &mut self,
        fw_id: &str,
        agent_id: &str,
        role: &str,
        mut task: v1::TaskInfo,
        _group: Option<()>,
        needed: Resources,
        wall: SystemTime,
    ) {
        task.resources = self.with_allocation(fw_id, role, &task.resources);
        let mut executor_id = None;
        if let Some(executor) = task.executor.as_mut() {
            if executor.framework_id.is_none() {
                executor.framework_id = Some(v1::FrameworkId { value: fw_id.into() });
            }
            executor.resources = self.with_allocation(fw_id, role, &executor.resources);
            executor_id = Some(executor.executor_id.clone());
            self.add_executor(agent_id, fw_id, role, executor);
        }
        let task_res = bag(&task.resources).unwrap_or_default();
        self.record_task(fw_id, agent_id, role, &task, executor_id, task_res, needed, wall);
        let Some(info) = self.frameworks.get(fw_id).map(|f| f.info.clone()) else { return };
        let mut e = agent::Event {
            run_task: Some(agent::event::RunTask { framework_info: info, task }),
            ..Default::default()
        };
        e.set_type(agent::event::Type::RunTask);
        self.send_agent(agent_id, e);
    }

    pub(super) fn launch_group(
        &mut self,
        fw_id: &str,
        agent_id: &str,
        role: &str,
        mut group: v1::offer::operation::LaunchGroup,
        needed: Resources,
        wall: SystemTime,
    ) {
        let executor = &mut group.executor;
        if executor.framework_id.is_none() {
            executor.framework_id = Some(v1::FrameworkId { value: fw_id.into() });
        }
        executor.resources = self.with_allocation(fw_id, role, &executor.resources);
        self.add_executor(agent_id, fw_id, role, executor);
        let executor_id = group.executor.executor_id.clone();
        // The whole group's resources (tasks and a new executor) are accounted
        // to the agent and charged to the role once.
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.used.add(&needed);
        }
        self.charge(fw_id, role, &needed);
        for task in &mut group.task_group.tasks {
            task.resources = self.with_allocation(fw_id, role, &task.resources);
            let res = bag(&task.resources).unwrap_or_default();
            self.record_task(
                fw_id,
                agent_id,
                role,
                task,
                Some(executor_id.clone()),
                res,
                Resources::default(),
                wall,
            );
        }
        let Some(info) = self.frameworks.get(fw_id).map(|f| f.info.clone()) else { return };
        let mut e = agent::Event {
            run_task_group: Some(agent::event::RunTaskGroup {
                framework_info: info,
                executor: group.executor,
                task_group: group.task_group,
            }),
            ..Default::default()
        };
        e.set_type(agent::event::Type::RunTaskGroup);
        self.send_agent(agent_id, e);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_task(
        &mut self,
        fw_id: &str,
        agent_id: &str,
        role: &str,
        info: &v1::TaskInfo,
        executor_id: Option<v1::ExecutorId>,
        task_res: Resources,
        needed: Resources,
        wall: SystemTime,
    ) {
        let _ = wall;
        if let Some(a) = self.agents.get_mut(agent_id) {
            a.used.add(&needed);
        }
        self.charge(fw_id, role, &needed);
        let mut task = v1::Task {
            name: info.name.clone(),
            task_id: info.task_id.clone(),
            framework_id: v1::FrameworkId { value: fw_id.into() },
            executor_id,
            agent_id: v1::AgentId { value: agent_id.into() },
            resources: info.resources.clone(),
            labels: info.labels.clone(),
            discovery: info.discovery.clone(),
            container: info.container.clone(),
            user: self.frameworks.get(fw_id).map(|f| f.info.user.clone()),
            health_check: info.health_check.clone(),
            kill_policy: info.kill_policy,
            limits: info.limits.clone(),
            ..Default::default()
        };
        task.set_state(TaskState::TaskStaging);
        let mut e = op::Event {
            task_added: Some(op::event::TaskAdded { task: task.clone() }),
            ..Default::default()
        };
        e.set_type(op::event::Type::TaskAdded);
        self.broadcast_operator(e);
        // `needed` may include the executor; the task itself gives back only its own.
        self.tasks.insert(
            (fw_id.to_owned(), info.task_id.value.clone()),
            Task { task, role: role.to_owned(), resources: task_res, terminal_uuid: None },
        );
    }
}
