//! Frameworks: SUBSCRIBE, the scheduler calls that change a framework's
//! state, disconnection and removal.

use super::*;

impl Master {
    /// SUBSCRIBE, already validated at the call level. Answers on `conn`
    /// (SUBSCRIBED + HEARTBEAT, or a single ERROR and close).
    pub(crate) fn subscribe_framework(
        &mut self,
        conn: ConnId,
        stream_id: String,
        subscribe: call::Subscribe,
        principal: Option<&str>,
        now: Instant,
        wall: SystemTime,
    ) {
        let mut info = subscribe.framework_info;
        let refuse = |m: &mut Master, message: String| {
            let mut e =
                sched::Event { error: Some(event::Error { message }), ..Default::default() };
            e.set_type(event::Type::Error);
            m.out.push(Out::Scheduler(conn, e));
            m.out.push(Out::Close(conn));
        };
        if let Err(problem) = self.validate_framework(&info, &subscribe.suppressed_roles) {
            return refuse(self, problem);
        }
        if let (Some(p), Some(expected)) = (principal, info.principal.as_deref())
            && p != expected
        {
            return refuse(
                self,
                format!("Authenticated principal '{p}' does not match principal '{expected}'"),
            );
        }
        let requested = info.id.as_ref().map(|i| i.value.clone()).filter(|v| !v.is_empty());
        if let Some(id) = &requested
            && self.removed_framework_ids.contains(id)
        {
            return refuse(self, "Framework has been removed".into());
        }
        let caps = Caps::of(&info);
        let roles = if caps.multi_role {
            info.roles.clone()
        } else {
            vec![info.role.clone().unwrap_or_else(|| "*".into())]
        };
        let now_s = epoch_secs(wall);
        let id = match requested {
            Some(id) => id,
            None => {
                let id = format!("{}-{:04}", self.master_id(), self.next_framework);
                self.next_framework += 1;
                id
            }
        };
        info.id = Some(v1::FrameworkId { value: id.clone() });
        self.conns.insert(conn, Owner::Framework(id.clone()));
        let suppressed: BTreeSet<String> = subscribe.suppressed_roles.into_iter().collect();
        let added;
        if let Some(fw) = self.frameworks.get_mut(&id) {
            // Failover: the new subscription replaces the old one.
            if let Some(old) = fw.conn.take() {
                let mut e = sched::Event {
                    error: Some(event::Error { message: "Framework failed over".into() }),
                    ..Default::default()
                };
                e.set_type(event::Type::Error);
                self.out.push(Out::Scheduler(old, e));
                self.out.push(Out::Close(old));
                self.conns.remove(&old);
            } else {
                // Filters were dropped at disconnection already.
                fw.filters.clear();
            }
            if let Some(p) = &fw.info.principal
                && info.principal.as_ref() != Some(p)
            {
                self.conns.remove(&conn);
                return refuse(self, "Changing the framework's principal is not allowed".into());
            }
            // `user` and `checkpoint` cannot change on re-subscription.
            info.user = fw.info.user.clone();
            info.checkpoint = fw.info.checkpoint;
            // Roles leaving suppression get their filters cleared.
            for role in fw.suppressed.difference(&suppressed) {
                fw.filters.clear_role(role);
            }
            fw.info = info.clone();
            fw.caps = caps;
            fw.roles = roles;
            fw.suppressed = suppressed;
            fw.conn = Some(conn);
            fw.stream_id = Some(stream_id);
            fw.failover_deadline = None;
            fw.reregistered_time = Some(now_s);
            fw.last_heartbeat = now;
            added = false;
        } else {
            self.insert_disconnected_framework(id.clone(), info.clone(), now, now_s, None);
            if let Some(fw) = self.frameworks.get_mut(&id) {
                fw.suppressed = suppressed;
                fw.conn = Some(conn);
                fw.stream_id = Some(stream_id);
            }
            added = true;
        }
        self.registry_dirty = true;
        // Offers outstanding to the old subscription are discarded silently.
        let stale: Vec<String> = self.frameworks[&id].offers.iter().cloned().collect();
        for offer_id in stale {
            self.recover_offer(&offer_id, None, now);
        }
        let mut subscribed = sched::Event {
            subscribed: Some(event::Subscribed {
                framework_id: v1::FrameworkId { value: id.clone() },
                heartbeat_interval_seconds: Some(self.config.heartbeat_interval.as_secs_f64()),
                master_info: Some(self.config.info.clone()),
            }),
            ..Default::default()
        };
        subscribed.set_type(event::Type::Subscribed);
        self.out.push(Out::Scheduler(conn, subscribed));
        self.out.push(Out::Scheduler(conn, heartbeat()));
        // Agents resend what this framework has not acknowledged yet.
        self.tell_hosting_agents(&id, &info);
        let view = self.framework_view(&id);
        let mut e = op::Event::default();
        if added {
            e.set_type(op::event::Type::FrameworkAdded);
            e.framework_added = view.map(|framework| op::event::FrameworkAdded { framework });
        } else {
            e.set_type(op::event::Type::FrameworkUpdated);
            e.framework_updated = view.map(|framework| op::event::FrameworkUpdated { framework });
        }
        self.broadcast_operator(e);
        self.allocation_wanted = true;
        tracing::info!(framework_id = %id, name = %info.name, failover = !added, "framework subscribed");
    }

    pub(super) fn validate_framework(
        &self,
        info: &v1::FrameworkInfo,
        suppressed: &[String],
    ) -> Result<(), String> {
        let caps = Caps::of(info);
        if caps.multi_role {
            if info.role.is_some() {
                return Err(
                    "'FrameworkInfo.role' must not be set for a MULTI_ROLE framework".into()
                );
            }
            let mut seen = BTreeSet::new();
            for role in &info.roles {
                validate_role(role).map_err(|e| e.to_string())?;
                if !seen.insert(role) {
                    return Err(format!("'FrameworkInfo.roles' contains duplicate role '{role}'"));
                }
            }
        } else {
            if !info.roles.is_empty() {
                return Err(
                    "'FrameworkInfo.roles' must not be set without the MULTI_ROLE capability"
                        .into(),
                );
            }
            if let Some(role) = &info.role {
                validate_role(role).map_err(|e| e.to_string())?;
            }
        }
        if let Some(id) = info.id.as_ref().filter(|i| !i.value.is_empty()) {
            valid_id(&id.value).map_err(|e| format!("Invalid framework ID: {e}"))?;
        }
        if let Some(t) = info.failover_timeout
            && (!t.is_finite() || t < 0.0 || Duration::try_from_secs_f64(t).is_err())
        {
            return Err(format!("Invalid failover_timeout {t}"));
        }
        let roles: BTreeSet<&str> = if caps.multi_role {
            info.roles.iter().map(String::as_str).collect()
        } else {
            std::iter::once(info.role.as_deref().unwrap_or("*")).collect()
        };
        if let Some(bad) = suppressed.iter().find(|r| !roles.contains(r.as_str())) {
            return Err(format!("Suppressed role '{bad}' is not contained in the set of roles"));
        }
        Ok(())
    }

    /// Checks a non-SUBSCRIBE call's framework and stream, as Mesos orders them.
    pub(crate) fn authorize_call(
        &self,
        framework_id: &str,
        stream_id: Option<&str>,
    ) -> Result<(), Rejection> {
        let Some(fw) = self.frameworks.get(framework_id) else {
            return Err(Rejection::new(400, "Framework cannot be found"));
        };
        if !fw.connected() {
            return Err(Rejection::new(403, "Framework is not subscribed"));
        }
        match (stream_id, fw.stream_id.as_deref()) {
            (None, _) => Err(Rejection::new(
                400,
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
            )),
            (Some(given), Some(current)) if given != current => Err(Rejection::new(
                400,
                format!(
                    "The stream ID '{given}' included in this request didn't match the stream ID currently associated with framework ID {framework_id}"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Any scheduler call but SUBSCRIBE, after [`Self::authorize_call`]. A
    /// call the master cannot carry out is refused as a whole, before anything
    /// changes, so a framework never takes a 202 for something that did not
    /// happen.
    pub(crate) fn scheduler_call(
        &mut self,
        c: sched::Call,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), Rejection> {
        let fw_id = c.framework_id.as_ref().map(|f| f.value.clone()).unwrap_or_default();
        match c.r#type() {
            call::Type::Teardown => self.remove_framework(&fw_id, now, wall),
            call::Type::Accept => {
                if let Some(a) = c.accept {
                    check_operations(&a.operations)?;
                    self.accept(&fw_id, a, now, wall);
                }
            }
            call::Type::Decline => {
                if let Some(d) = c.decline {
                    let refuse = refuse_seconds(d.filters.as_ref());
                    for o in d.offer_ids {
                        if self.offers.get(&o.value).is_some_and(|rec| rec.framework_id == fw_id) {
                            self.recover_offer(&o.value, refuse, now);
                        }
                    }
                }
            }
            call::Type::Revive => {
                let roles = c.revive.map(|r| r.roles).unwrap_or_default();
                let roles = self.roles_of_call(&fw_id, roles, "REVIVE")?;
                if let Some(fw) = self.frameworks.get_mut(&fw_id) {
                    for role in &roles {
                        fw.suppressed.remove(role);
                        fw.filters.clear_role(role);
                    }
                    self.allocation_wanted = true;
                }
            }
            call::Type::Suppress => {
                let roles = c.suppress.map(|r| r.roles).unwrap_or_default();
                let roles = self.roles_of_call(&fw_id, roles, "SUPPRESS")?;
                if let Some(fw) = self.frameworks.get_mut(&fw_id) {
                    fw.suppressed.extend(roles);
                }
            }
            call::Type::Kill => {
                if let Some(k) = c.kill {
                    self.kill(&fw_id, k, wall);
                }
            }
            call::Type::Shutdown => {
                if let Some(s) = c.shutdown {
                    let mut e = agent::Event {
                        shutdown_executor: Some(agent::event::ShutdownExecutor {
                            framework_id: v1::FrameworkId { value: fw_id.clone() },
                            executor_id: s.executor_id,
                        }),
                        ..Default::default()
                    };
                    e.set_type(agent::event::Type::ShutdownExecutor);
                    self.send_agent(&s.agent_id.value, e);
                }
            }
            call::Type::Acknowledge => {
                if let Some(a) = c.acknowledge {
                    self.acknowledge(&fw_id, a);
                }
            }
            call::Type::Reconcile => {
                let tasks = c.reconcile.map(|r| r.tasks).unwrap_or_default();
                self.reconcile(&fw_id, tasks, wall);
            }
            call::Type::Message => {
                if let Some(m) = c.message {
                    let mut e = agent::Event {
                        message: Some(agent::event::Message {
                            framework_id: v1::FrameworkId { value: fw_id.clone() },
                            executor_id: m.executor_id,
                            data: m.data,
                        }),
                        ..Default::default()
                    };
                    e.set_type(agent::event::Type::Message);
                    self.send_agent(&m.agent_id.value, e);
                }
            }
            call::Type::UpdateFramework => {
                if let Some(u) = c.update_framework {
                    self.update_framework(&fw_id, u, now, wall)?;
                }
            }
            call::Type::Request => {
                return Err(Rejection::new(
                    501,
                    "REQUEST is not implemented: km mesos-master's allocator does not take \
                     resource requests; offers follow DRF, REVIVE, SUPPRESS and decline filters",
                ));
            }
            call::Type::AcceptInverseOffers | call::Type::DeclineInverseOffers => {
                let ids = c
                    .accept_inverse_offers
                    .map(|a| a.inverse_offer_ids)
                    .or_else(|| c.decline_inverse_offers.map(|d| d.inverse_offer_ids))
                    .unwrap_or_default();
                if let Some(id) = ids.first() {
                    return Err(Rejection::new(
                        400,
                        format!(
                            "Inverse offer '{}' is unknown: km mesos-master has no maintenance \
                             schedules and makes no inverse offers",
                            id.value
                        ),
                    ));
                }
            }
            call::Type::AcknowledgeOperationStatus => {
                return Err(Rejection::new(
                    400,
                    "No operation status awaits acknowledgement: km mesos-master carries out \
                     only LAUNCH and LAUNCH_GROUP, which report through task status updates",
                ));
            }
            call::Type::ReconcileOperations => {
                let ops = c.reconcile_operations.map(|r| r.operations).unwrap_or_default();
                for o in ops {
                    self.answer_unknown_operation(&fw_id, o);
                }
            }
            call::Type::Subscribe | call::Type::Unknown => {
                return Err(Rejection::new(400, "Unexpected call type"));
            }
        }
        Ok(())
    }

    /// The roles a REVIVE or SUPPRESS applies to: all of the framework's when
    /// none are named; a role the framework is not in refuses the call.
    fn roles_of_call(
        &self,
        fw_id: &str,
        roles: Vec<String>,
        call: &str,
    ) -> Result<Vec<String>, Rejection> {
        let Some(fw) = self.frameworks.get(fw_id) else { return Ok(Vec::new()) };
        if let Some(bad) = roles.iter().find(|r| !fw.roles.contains(r)) {
            return Err(Rejection::new(
                400,
                format!("{call} names role '{bad}', which the framework is not subscribed to"),
            ));
        }
        Ok(if roles.is_empty() { fw.roles.clone() } else { roles })
    }

    /// UPDATE_FRAMEWORK: a subscribed framework changes its FrameworkInfo and
    /// suppressed roles without re-subscribing. What cannot change on
    /// re-subscription (principal, user, checkpointing) cannot change here
    /// either; offers to roles the framework leaves or suppresses are
    /// rescinded.
    fn update_framework(
        &mut self,
        fw_id: &str,
        u: call::UpdateFramework,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), Rejection> {
        let bad = |m: String| Rejection::new(400, m);
        let mut info = u.framework_info;
        self.validate_framework(&info, &u.suppressed_roles).map_err(bad)?;
        let Some(fw) = self.frameworks.get(fw_id) else {
            return Err(Rejection::new(400, "Framework cannot be found"));
        };
        if info.principal != fw.info.principal {
            return Err(bad("Changing the framework's principal is not allowed".into()));
        }
        if info.user != fw.info.user {
            return Err(bad("Updating 'FrameworkInfo.user' is unsupported".into()));
        }
        if info.checkpoint.unwrap_or(false) != fw.info.checkpoint.unwrap_or(false) {
            return Err(bad("Updating 'FrameworkInfo.checkpoint' is unsupported".into()));
        }
        let caps = Caps::of(&info);
        if fw.caps.multi_role && !caps.multi_role {
            return Err(bad("Removing the MULTI_ROLE capability is unsupported".into()));
        }
        let roles = if caps.multi_role {
            info.roles.clone()
        } else {
            vec![info.role.clone().unwrap_or_else(|| "*".into())]
        };
        info.id = Some(v1::FrameworkId { value: fw_id.into() });
        let suppressed: BTreeSet<String> = u.suppressed_roles.into_iter().collect();
        let stale: Vec<String> = fw
            .offers
            .iter()
            .filter(|o| {
                self.offers
                    .get(*o)
                    .is_some_and(|r| !roles.contains(&r.role) || suppressed.contains(&r.role))
            })
            .cloned()
            .collect();
        for offer_id in stale {
            self.rescind(&offer_id, now);
        }
        if let Some(fw) = self.frameworks.get_mut(fw_id) {
            for role in fw.suppressed.difference(&suppressed) {
                fw.filters.clear_role(role);
            }
            fw.info = info.clone();
            fw.caps = caps;
            fw.roles = roles;
            fw.suppressed = suppressed;
        }
        self.registry_dirty = true;
        self.tell_hosting_agents(fw_id, &info);
        let mut e = op::Event::default();
        e.set_type(op::event::Type::FrameworkUpdated);
        e.framework_updated =
            self.framework_view(fw_id).map(|framework| op::event::FrameworkUpdated { framework });
        self.broadcast_operator(e);
        self.allocation_wanted = true;
        tracing::info!(framework_id = %fw_id, name = %info.name, "framework updated");
        let _ = wall;
        Ok(())
    }

    /// Sends UPDATE_FRAMEWORK with `info` to every agent running a task of the
    /// framework (after a re-subscription they resend its unacknowledged
    /// updates; after UPDATE_FRAMEWORK they keep the new FrameworkInfo).
    fn tell_hosting_agents(&mut self, fw_id: &str, info: &v1::FrameworkInfo) {
        let mut update = agent::Event {
            update_framework: Some(agent::event::UpdateFramework { framework_info: info.clone() }),
            ..Default::default()
        };
        update.set_type(agent::event::Type::UpdateFramework);
        let hosting: BTreeSet<String> = self
            .tasks
            .iter()
            .filter(|((f, _), _)| f == fw_id)
            .map(|(_, t)| t.task.agent_id.value.clone())
            .collect();
        for agent_id in hosting {
            self.send_agent(&agent_id, update.clone());
        }
    }

    /// RECONCILE_OPERATIONS for an operation the master does not know (it
    /// tracks no offer operations but LAUNCH and LAUNCH_GROUP, which have no
    /// operation IDs): the answer says what can be said of its agent.
    fn answer_unknown_operation(&mut self, fw_id: &str, o: call::reconcile_operations::Operation) {
        use v1::OperationState as S;
        let agent = o.agent_id.as_ref().map(|a| a.value.as_str());
        let state = match agent {
            Some(a) if self.gone.contains(a) => S::OperationGoneByOperator,
            Some(a) if self.unreachable.contains_key(a) => S::OperationUnreachable,
            Some(a) if self.recovered.contains_key(a) => S::OperationRecovering,
            _ => S::OperationUnknown,
        };
        let mut status = v1::OperationStatus {
            operation_id: Some(o.operation_id),
            agent_id: o.agent_id,
            resource_provider_id: o.resource_provider_id,
            ..Default::default()
        };
        status.set_state(state);
        let mut e = sched::Event {
            update_operation_status: Some(event::UpdateOperationStatus { status }),
            ..Default::default()
        };
        e.set_type(event::Type::UpdateOperationStatus);
        self.send_framework(fw_id, e);
    }

    pub(super) fn framework_disconnected(
        &mut self,
        id: &str,
        conn: ConnId,
        now: Instant,
        wall: SystemTime,
    ) {
        let Some(fw) = self.frameworks.get_mut(id) else { return };
        if fw.conn != Some(conn) {
            return;
        }
        fw.conn = None;
        fw.stream_id = None;
        fw.filters.clear();
        fw.unregistered_time = Some(epoch_secs(wall));
        let timeout = fw.info.failover_timeout.unwrap_or(0.0);
        let offers: Vec<String> = fw.offers.iter().cloned().collect();
        for offer_id in offers {
            self.rescind(&offer_id, now);
        }
        tracing::info!(framework_id = %id, failover_timeout = timeout, "framework disconnected");
        if timeout <= 0.0 {
            self.remove_framework(id, now, wall);
        } else if let Some(fw) = self.frameworks.get_mut(id) {
            fw.failover_deadline = after(now, timeout);
        }
    }

    /// Removes a framework: its executors are shut down, its tasks killed.
    pub(super) fn remove_framework(&mut self, id: &str, now: Instant, wall: SystemTime) {
        let Some(mut fw) = self.frameworks.remove(id) else { return };
        tracing::info!(framework_id = %id, "removing framework");
        if let Some(conn) = fw.conn.take() {
            self.conns.remove(&conn);
            self.out.push(Out::Close(conn));
        }
        for offer_id in std::mem::take(&mut fw.offers) {
            if let Some(rec) = self.offers.remove(&offer_id)
                && let Some(a) = self.agents.get_mut(&rec.agent_id)
            {
                a.offered.subtract(&rec.resources);
            }
        }
        let mut shutdown = agent::Event {
            shutdown_framework: Some(agent::event::ShutdownFramework {
                framework_id: v1::FrameworkId { value: id.into() },
            }),
            ..Default::default()
        };
        shutdown.set_type(agent::event::Type::ShutdownFramework);
        let keys: Vec<(String, String)> =
            self.tasks.keys().filter(|(f, _)| f == id).cloned().collect();
        let mut agents = BTreeSet::new();
        for key in keys {
            if let Some(mut t) = self.tasks.remove(&key) {
                agents.insert(t.task.agent_id.value.clone());
                if let Some(a) = self.agents.get_mut(&t.task.agent_id.value) {
                    a.used.subtract(&t.resources);
                }
                let status = self.master_status(
                    &key.1,
                    TaskState::TaskKilled,
                    Reason::FrameworkRemoved,
                    "Framework removed".into(),
                    Some(&t.task.agent_id.value),
                    wall,
                );
                t.task.set_state(TaskState::TaskKilled);
                t.task.statuses.push(status);
                self.complete_task(t.task);
            }
        }
        for a in self.agents.values_mut() {
            let execs: Vec<_> = a.executors.keys().filter(|(f, _)| f == id).cloned().collect();
            for k in execs {
                if let Some(ex) = a.executors.remove(&k) {
                    a.used.subtract(&ex.resources);
                }
                agents.insert(a.id().to_owned());
            }
        }
        for agent_id in agents {
            self.send_agent(&agent_id, shutdown.clone());
        }
        self.unreachable_tasks.retain(|(f, _), _| f != id);
        self.removed_framework_ids.insert(id.to_owned());
        self.registry_dirty = true;
        self.completed_frameworks.push(fw.info.clone());
        if self.completed_frameworks.len() > self.config.max_completed_frameworks {
            self.completed_frameworks.remove(0);
        }
        let mut e = op::Event {
            framework_removed: Some(op::event::FrameworkRemoved { framework_info: fw.info }),
            ..Default::default()
        };
        e.set_type(op::event::Type::FrameworkRemoved);
        self.broadcast_operator(e);
        self.allocation_wanted = true;
        let _ = now;
    }
}

/// Refuses an ACCEPT whose operations the master cannot carry out, before any
/// of them is: km mesos-master launches tasks and task groups, and keeps no
/// dynamic reservations, persistent volumes or resource-provider disks.
fn check_operations(operations: &[v1::offer::Operation]) -> Result<(), Rejection> {
    use v1::offer::operation::Type as T;
    for op in operations {
        match op.r#type() {
            T::Launch | T::LaunchGroup => {}
            T::Unknown => {
                return Err(Rejection::new(
                    400,
                    "Failed to validate scheduler::Call: offer operation has no known 'type'",
                ));
            }
            other => {
                return Err(Rejection::new(
                    400,
                    format!(
                        "Offer operation {} is not supported by km mesos-master (it carries out \
                         LAUNCH and LAUNCH_GROUP only); nothing in this ACCEPT was done and its \
                         offers are still outstanding",
                        other.as_str_name()
                    ),
                ));
            }
        }
    }
    Ok(())
}
