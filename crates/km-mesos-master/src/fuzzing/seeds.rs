//! Seeds for the fuzz corpus: realistic scripts, written with the step format that
//! [`super::run`] reads.

use km_mesos::v1::master as op;
use km_mesos::v1::scheduler::{self as sched, call};
use km_mesos::{agent, v1};

use super::{
    AGENT, ALLOCATE, BATCH, CLOSE, F_ACCEPT_JSON, F_AGENT, F_FRAMEWORK, F_JSON, F_OP_REFS,
    F_PRINCIPAL, F_REFS, F_REPORT, F_SIMULATED, F_TASK, F_UUID, OPERATOR, RESTART, SCHEDULER,
    STATE, STREAM_NONE, STREAM_WRONG, TICK, content_type,
};

/// Realistic inputs for a corpus to start from, by name: a framework's life from
/// SUBSCRIBE to TEARDOWN, agents coming and going, the operator API, restarts, in
/// both encodings.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use v1::TaskState as S;
    use v1::framework_info::capability::Type as Cap;
    let json = F_JSON | F_ACCEPT_JSON;
    let refs = F_FRAMEWORK | F_REFS;
    let ack = |script: Script, flags: u8| {
        script.scheduler(
            flags | refs,
            0,
            0,
            &scheduler_call(call::Type::Acknowledge, |c| {
                c.acknowledge = Some(call::Acknowledge {
                    agent_id: v1::AgentId { value: "fuzz-S0".into() },
                    task_id: v1::TaskId { value: "t1".into() },
                    uuid: vec![0; 16],
                });
            }),
        )
    };
    let update = |script: Script, flags: u8, state: S| {
        script.agent(flags | F_AGENT | F_TASK | F_UUID, 0, 0, &status_update("t1", state))
    };
    let launch_one = |flags: u8| {
        Script::new(0)
            .agent(
                flags,
                0,
                0,
                &agent_subscribe("a1", "cpus:4;mem:1024;disk:1000;ports:[31000-31009]"),
            )
            .scheduler(flags, 0, 0, &subscribe(framework("f1", "*", &[], 60.0)))
            .scheduler(flags | refs, 0, 0, &accept(vec![command_task("t1", "cpus:1;mem:128")]))
    };
    let lifecycle = |flags: u8| {
        let s = launch_one(flags);
        let s = update(s, flags, S::TaskStarting);
        let s = ack(s, flags);
        let s = update(s, flags, S::TaskRunning);
        let s = ack(s, flags)
            .scheduler(
                flags | refs,
                0,
                0,
                &scheduler_call(call::Type::Reconcile, |c| {
                    c.reconcile = Some(call::Reconcile::default());
                }),
            )
            .scheduler(flags | refs, 0, 0, &kill("t1"));
        let s = update(s, flags, S::TaskKilled);
        ack(s, flags).scheduler(flags | refs, 0, 0, &scheduler_call(call::Type::Teardown, |_| {}))
    };
    vec![
        ("lifecycle_protobuf", lifecycle(0).0),
        ("lifecycle_json", lifecycle(json).0),
        (
            "operator_views",
            launch_one(0)
                .operator(F_ACCEPT_JSON, 0, &operator_call(op::call::Type::Subscribe, |_| {}))
                .operator(0, 0, &operator_call(op::call::Type::GetState, |_| {}))
                .operator(json, 0, &operator_call(op::call::Type::GetAgents, |_| {}))
                .operator(0, 0, &operator_call(op::call::Type::GetFrameworks, |_| {}))
                .operator(json, 0, &operator_call(op::call::Type::GetTasks, |_| {}))
                .operator(0, 0, &operator_call(op::call::Type::GetExecutors, |_| {}))
                .operator(json, 0, &operator_call(op::call::Type::GetMaster, |_| {}))
                .operator(0, 0, &operator_call(op::call::Type::GetHealth, |_| {}))
                .operator(0, 0, &operator_call(op::call::Type::GetVersion, |_| {}))
                .operator(0, 0, &operator_call(op::call::Type::GetFlags, |_| {}))
                .state()
                .operator(
                    F_OP_REFS,
                    0,
                    &operator_call(op::call::Type::Teardown, |c| {
                        c.teardown = Some(op::call::Teardown {
                            framework_id: v1::FrameworkId { value: "fuzz-0000".into() },
                        });
                    }),
                )
                .operator(
                    F_OP_REFS,
                    0,
                    &operator_call(op::call::Type::MarkAgentGone, |c| {
                        c.mark_agent_gone = Some(op::call::MarkAgentGone {
                            agent_id: v1::AgentId { value: "fuzz-S0".into() },
                        });
                    }),
                )
                .agent(F_AGENT, 0, 0, &agent_subscribe("a1", "cpus:1"))
                .0,
        ),
        (
            "restart_and_reregister",
            update(launch_one(0), 0, S::TaskRunning)
                .restart()
                .scheduler(
                    0,
                    0,
                    0,
                    &scheduler_call(call::Type::Reconcile, |c| {
                        c.reconcile = Some(call::Reconcile {
                            tasks: vec![call::reconcile::Task {
                                task_id: v1::TaskId { value: "t1".into() },
                                agent_id: Some(v1::AgentId { value: "fuzz-S0".into() }),
                            }],
                        });
                    }),
                )
                .agent(F_AGENT | F_REPORT, 0, 0, &agent_subscribe("a1", "cpus:4;mem:1024"))
                .scheduler(F_FRAMEWORK, 0, 0, &subscribe(framework("f1", "*", &[], 60.0)))
                .scheduler(
                    F_FRAMEWORK | F_REFS,
                    1,
                    0,
                    &scheduler_call(call::Type::Reconcile, |c| {
                        c.reconcile = Some(call::Reconcile::default());
                    }),
                )
                .operator(0, 0, &operator_call(op::call::Type::GetState, |_| {}))
                .0,
        ),
        (
            "agent_lost_partition_aware",
            Script::new(0)
                .agent(0, 0, 0, &agent_subscribe("a1", "cpus:2;mem:512"))
                .scheduler(
                    0,
                    0,
                    0,
                    &subscribe(framework("f1", "*", &[Cap::PartitionAware], 3600.0)),
                )
                .scheduler(refs, 0, 0, &accept(vec![command_task("t1", "cpus:1;mem:64")]))
                .close(0x01)
                .tick(0x8000 | 20)
                .tick(0x8000 | 80)
                .scheduler(
                    refs,
                    0,
                    0,
                    &scheduler_call(call::Type::Reconcile, |c| {
                        c.reconcile = Some(call::Reconcile {
                            tasks: vec![call::reconcile::Task {
                                task_id: v1::TaskId { value: "t1".into() },
                                agent_id: Some(v1::AgentId { value: "fuzz-S0".into() }),
                            }],
                        });
                    }),
                )
                .agent(F_AGENT | F_REPORT, 0, 0, &agent_subscribe("a1", "cpus:2;mem:512"))
                .0,
        ),
        (
            "failover_timeout",
            Script::new(0)
                .scheduler(F_PRINCIPAL, 0, 0, &subscribe(framework("f1", "*", &[], 10.0)))
                .close(0)
                .tick(0x8000 | 5)
                .scheduler(
                    F_FRAMEWORK | F_PRINCIPAL,
                    0,
                    0,
                    &subscribe(framework("f1", "*", &[], 10.0)),
                )
                .close(0)
                .tick(0x8000 | 11)
                .scheduler(F_FRAMEWORK, 0, 0, &subscribe(framework("f1", "*", &[], 10.0)))
                .0,
        ),
        (
            "multi_role_decline_revive_suppress",
            Script::new(0x10)
                .agent(0, 0, 0, &agent_subscribe("a1", "cpus:4;mem(a):512;mem:512"))
                .agent(0, 0, 0, &agent_subscribe("a2", "cpus:2;mem:256;ports:[1-10]"))
                .scheduler(0, 0, 0, &subscribe(multi_role(&["a", "b"])))
                .scheduler(
                    json,
                    0,
                    0,
                    &subscribe(framework("f2", "b", &[Cap::ReservationRefinement], 0.0)),
                )
                .scheduler(
                    refs,
                    0,
                    0,
                    &scheduler_call(call::Type::Decline, |c| {
                        c.decline = Some(call::Decline {
                            offer_ids: vec![v1::OfferId { value: "fuzz-O0".into() }],
                            filters: Some(v1::Filters { refuse_seconds: Some(3.0) }),
                        });
                    }),
                )
                .scheduler(
                    refs,
                    0,
                    0,
                    &scheduler_call(call::Type::Suppress, |c| {
                        c.suppress = Some(call::Suppress { roles: vec!["a".into()] });
                    }),
                )
                .tick(0x8000 | 4)
                .allocate()
                .scheduler(
                    refs,
                    0,
                    0,
                    &scheduler_call(call::Type::Revive, |c| {
                        c.revive = Some(call::Revive { roles: vec![] });
                    }),
                )
                .scheduler(
                    json | refs,
                    1,
                    0,
                    &scheduler_call(call::Type::Decline, |c| {
                        c.decline = Some(call::Decline {
                            offer_ids: vec![v1::OfferId { value: "fuzz-O1".into() }],
                            filters: None,
                        });
                    }),
                )
                .scheduler(
                    F_FRAMEWORK,
                    0,
                    0,
                    &scheduler_call(call::Type::UpdateFramework, |c| {
                        let mut info = multi_role(&["b", "c"]);
                        info.id = c.framework_id.clone();
                        c.update_framework = Some(call::UpdateFramework {
                            framework_info: info,
                            suppressed_roles: vec!["c".into()],
                            offer_constraints: None,
                        });
                    }),
                )
                .0,
        ),
        (
            "launch_group_and_custom_executor",
            Script::new(0)
                .agent(0, 0, 0, &agent_subscribe("a1", "cpus:8;mem:4096;disk:1000"))
                .scheduler(0, 0, 0, &subscribe(framework("f1", "*", &[], 30.0)))
                .scheduler(refs, 0, 0, &accept_operations(vec![launch_group()]))
                .agent(F_AGENT | F_TASK | F_UUID, 0, 0, &status_update("g1", S::TaskRunning))
                .tick(0x8000 | 2)
                .allocate()
                .scheduler(refs, 0, 0, &accept(vec![executor_task("t2", "e2")]))
                .scheduler(
                    refs,
                    0,
                    0,
                    &scheduler_call(call::Type::Message, |c| {
                        c.message = Some(call::Message {
                            agent_id: v1::AgentId { value: "fuzz-S0".into() },
                            executor_id: v1::ExecutorId { value: "e2".into() },
                            data: b"hello".to_vec(),
                        });
                    }),
                )
                .agent(
                    F_AGENT | F_TASK,
                    0,
                    0,
                    &agent_call(agent::call::Type::Message, |c| {
                        c.message = Some(agent::call::Message {
                            framework_id: v1::FrameworkId { value: "fuzz-0000".into() },
                            executor_id: v1::ExecutorId { value: "e2".into() },
                            data: b"hi".to_vec(),
                        });
                    }),
                )
                .scheduler(
                    refs,
                    0,
                    0,
                    &scheduler_call(call::Type::Shutdown, |c| {
                        c.shutdown = Some(call::Shutdown {
                            executor_id: v1::ExecutorId { value: "e2".into() },
                            agent_id: v1::AgentId { value: "fuzz-S0".into() },
                        });
                    }),
                )
                .agent(
                    F_AGENT | F_TASK,
                    0,
                    0,
                    &agent_call(agent::call::Type::ExecutorExited, |c| {
                        c.executor_exited = Some(agent::call::ExecutorExited {
                            framework_id: v1::FrameworkId { value: "fuzz-0000".into() },
                            executor_id: v1::ExecutorId { value: "e2".into() },
                            status: Some(9),
                        });
                    }),
                )
                .agent(F_AGENT, 0, 0, &agent_call(agent::call::Type::Unregister, |_| {}))
                .0,
        ),
        (
            "offer_timeout_and_heartbeats",
            Script::new(0x08)
                .agent(F_SIMULATED, 0, 0, &agent_subscribe("a1", "cpus:1;mem:128"))
                .scheduler(json, 0, 0, &subscribe(framework("f1", "*", &[], 0.0)))
                .operator(0, 0, &operator_call(op::call::Type::Subscribe, |_| {}))
                .tick(0x8000 | 16)
                .agent(F_AGENT, 0, 0, &agent_call(agent::call::Type::Pong, |_| {}))
                .tick(0x8000 | 31)
                .tick(0x4000 | 3)
                .state()
                .0,
        ),
        (
            "refused_calls",
            Script::new(0)
                .scheduler(0, 0, 0, &subscribe(framework("f1", "*", &[], 0.0)))
                .scheduler(STREAM_NONE | F_FRAMEWORK, 0, 0, &kill("t9"))
                .scheduler(STREAM_WRONG | F_FRAMEWORK, 0, 0, &kill("t9"))
                .scheduler(
                    0,
                    0,
                    0,
                    &scheduler_call(call::Type::Revive, |c| {
                        c.framework_id = Some(v1::FrameworkId { value: "nobody".into() });
                    }),
                )
                .scheduler(STREAM_WRONG, 0, 0, &subscribe(framework("f2", "*", &[], 0.0)))
                .scheduler(
                    F_PRINCIPAL,
                    0,
                    0,
                    &subscribe(v1::FrameworkInfo {
                        principal: Some("someone-else".into()),
                        ..framework("f3", "*", &[], 0.0)
                    }),
                )
                .scheduler(0, 0, 0, &subscribe(framework("f4", "bad role", &[], 0.0)))
                .scheduler(F_FRAMEWORK | F_REFS, 0, 0, &accept(vec![command_task("t1", "cpus:1")]))
                .agent(0, 0, 0, &agent_subscribe("bad", "cpus:-1"))
                .agent(0, 0, 0, &status_update("t1", S::TaskRunning))
                .operator(
                    0,
                    0,
                    &operator_call(op::call::Type::MarkAgentGone, |c| {
                        c.mark_agent_gone = Some(op::call::MarkAgentGone {
                            agent_id: v1::AgentId { value: "nowhere".into() },
                        });
                    }),
                )
                .0,
        ),
        (
            "batched",
            Script::new(0x01)
                .batched()
                .agent(0, 0, 0, &agent_subscribe("a1", "cpus:2;mem:256"))
                .batched()
                .agent(json, 0, 0, &agent_subscribe("a2", "cpus:2;mem:256"))
                .batched()
                .scheduler(0, 0, 0, &subscribe(framework("f1", "*", &[], 5.0)))
                .scheduler(
                    refs,
                    0,
                    0,
                    &accept(vec![
                        command_task("t1", "cpus:1;mem:64"),
                        command_task("t2", "cpus:1;mem:64"),
                    ]),
                )
                .batched()
                .close(1)
                .close(0)
                .0,
        ),
    ]
}

/// Writes steps in the format [`run`] reads.
struct Script(Vec<u8>, bool);

impl Script {
    fn new(header: u8) -> Script {
        Script(vec![header], false)
    }

    /// The next step joins the one after it in one batch.
    fn batched(mut self) -> Script {
        self.1 = true;
        self
    }

    fn tag(&mut self, action: u8) {
        let batch = if std::mem::take(&mut self.1) { BATCH } else { 0 };
        self.0.push(action | batch);
    }

    fn body<M: prost_reflect::ReflectMessage>(&mut self, flags: u8, m: &M) {
        let body = content_type(flags & F_JSON != 0).encode(m);
        let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
        self.0.extend(len.to_le_bytes());
        self.0.extend(&body[..usize::from(len)]);
    }

    fn scheduler(mut self, flags: u8, session: u8, pick: u8, c: &sched::Call) -> Script {
        self.tag(SCHEDULER);
        self.0.extend([flags, session, pick]);
        self.body(flags, c);
        self
    }

    fn agent(mut self, flags: u8, session: u8, pick: u8, c: &agent::Call) -> Script {
        self.tag(AGENT);
        self.0.extend([flags, session, pick]);
        self.body(flags, c);
        self
    }

    fn operator(mut self, flags: u8, pick: u8, c: &op::Call) -> Script {
        self.tag(OPERATOR);
        self.0.extend([flags, pick]);
        self.body(flags, c);
        self
    }

    fn close(mut self, which: u8) -> Script {
        self.tag(CLOSE);
        self.0.push(which);
        self
    }

    fn tick(mut self, d: u16) -> Script {
        self.tag(TICK);
        self.0.extend(d.to_le_bytes());
        self
    }

    fn allocate(mut self) -> Script {
        self.tag(ALLOCATE);
        self
    }

    fn restart(mut self) -> Script {
        self.tag(RESTART);
        self
    }

    fn state(mut self) -> Script {
        self.tag(STATE);
        self
    }
}

fn resources(spec: &str) -> Vec<v1::Resource> {
    km_mesos::flags::parse_resources(spec).unwrap_or_default()
}

// Frameworks without MULTI_ROLE name their one role in the deprecated field.
#[allow(deprecated)]
fn framework(
    name: &str,
    role: &str,
    caps: &[v1::framework_info::capability::Type],
    failover_timeout: f64,
) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        user: "root".into(),
        name: name.into(),
        role: Some(role.into()),
        failover_timeout: Some(failover_timeout),
        checkpoint: Some(failover_timeout > 0.0),
        capabilities: caps.iter().map(|&t| capability(t)).collect(),
        ..Default::default()
    }
}

fn capability(t: v1::framework_info::capability::Type) -> v1::framework_info::Capability {
    let mut c = v1::framework_info::Capability::default();
    c.set_type(t);
    c
}

fn multi_role(roles: &[&str]) -> v1::FrameworkInfo {
    use v1::framework_info::capability::Type as Cap;
    v1::FrameworkInfo {
        user: "root".into(),
        name: "multi".into(),
        roles: roles.iter().map(|&r| r.to_owned()).collect(),
        capabilities: [Cap::MultiRole, Cap::PartitionAware, Cap::GpuResources]
            .into_iter()
            .map(capability)
            .collect(),
        ..Default::default()
    }
}

fn subscribe(info: v1::FrameworkInfo) -> sched::Call {
    let mut c = sched::Call {
        subscribe: Some(call::Subscribe { framework_info: info, ..Default::default() }),
        ..Default::default()
    };
    c.set_type(call::Type::Subscribe);
    c
}

/// A call of the first framework (`fuzz-0000`).
fn scheduler_call(ty: call::Type, fill: impl FnOnce(&mut sched::Call)) -> sched::Call {
    let mut c = sched::Call {
        framework_id: Some(v1::FrameworkId { value: "fuzz-0000".into() }),
        ..Default::default()
    };
    c.set_type(ty);
    fill(&mut c);
    c
}

fn kill(task: &str) -> sched::Call {
    scheduler_call(call::Type::Kill, |c| {
        c.kill =
            Some(call::Kill { task_id: v1::TaskId { value: task.into() }, ..Default::default() });
    })
}

fn command_task(id: &str, res: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: v1::TaskId { value: id.into() },
        agent_id: v1::AgentId { value: "fuzz-S0".into() },
        resources: resources(res),
        command: Some(v1::CommandInfo { value: Some("sleep 1".into()), ..Default::default() }),
        ..Default::default()
    }
}

fn executor_task(id: &str, executor: &str) -> v1::TaskInfo {
    let mut e = v1::ExecutorInfo {
        executor_id: v1::ExecutorId { value: executor.into() },
        resources: resources("cpus:0.1;mem:32"),
        command: Some(v1::CommandInfo { value: Some("./executor".into()), ..Default::default() }),
        ..Default::default()
    };
    e.set_type(v1::executor_info::Type::Custom);
    v1::TaskInfo { command: None, executor: Some(e), ..command_task(id, "cpus:0.5;mem:64") }
}

fn launch_group() -> v1::offer::Operation {
    use v1::offer::operation;
    let mut executor = v1::ExecutorInfo {
        executor_id: v1::ExecutorId { value: "default".into() },
        resources: resources("cpus:0.1;mem:32;disk:10"),
        ..Default::default()
    };
    executor.set_type(v1::executor_info::Type::Default);
    let tasks = vec![command_task("g1", "cpus:0.5;mem:64"), command_task("g2", "cpus:0.5;mem:64")];
    let mut o = v1::offer::Operation {
        launch_group: Some(operation::LaunchGroup {
            executor,
            task_group: v1::TaskGroupInfo { tasks },
        }),
        ..Default::default()
    };
    o.set_type(operation::Type::LaunchGroup);
    o
}

fn accept(tasks: Vec<v1::TaskInfo>) -> sched::Call {
    use v1::offer::operation;
    let mut launch = v1::offer::Operation {
        launch: Some(operation::Launch { task_infos: tasks }),
        ..Default::default()
    };
    launch.set_type(operation::Type::Launch);
    accept_operations(vec![launch])
}

fn accept_operations(operations: Vec<v1::offer::Operation>) -> sched::Call {
    scheduler_call(call::Type::Accept, |c| {
        c.accept = Some(call::Accept {
            offer_ids: vec![v1::OfferId { value: "fuzz-O0".into() }],
            operations,
            filters: Some(v1::Filters { refuse_seconds: Some(1.0) }),
        });
    })
}

fn agent_call(ty: agent::call::Type, fill: impl FnOnce(&mut agent::Call)) -> agent::Call {
    let mut c = agent::Call {
        agent_id: Some(v1::AgentId { value: "fuzz-S0".into() }),
        ..Default::default()
    };
    c.set_type(ty);
    fill(&mut c);
    c
}

fn agent_subscribe(hostname: &str, res: &str) -> agent::Call {
    let info = v1::AgentInfo {
        hostname: hostname.into(),
        resources: resources(res),
        attributes: km_mesos::flags::parse_attributes("rack:r1;zone:z1").unwrap_or_default(),
        port: Some(5051),
        ..Default::default()
    };
    let mut c = agent_call(agent::call::Type::Subscribe, |c| {
        c.subscribe = Some(agent::call::Subscribe {
            agent_info: info,
            version: Some("0.1.0".into()),
            ..Default::default()
        });
    });
    c.agent_id = None;
    c
}

fn status_update(task: &str, state: v1::TaskState) -> agent::Call {
    agent_call(agent::call::Type::StatusUpdate, |c| {
        let mut status = v1::TaskStatus {
            task_id: v1::TaskId { value: task.into() },
            message: Some("fuzz".into()),
            ..Default::default()
        };
        status.set_state(state);
        status.set_source(v1::task_status::Source::Executor);
        c.status_update = Some(agent::call::StatusUpdate {
            framework_id: v1::FrameworkId { value: "fuzz-0000".into() },
            status,
        });
    })
}

fn operator_call(ty: op::call::Type, fill: impl FnOnce(&mut op::Call)) -> op::Call {
    let mut c = op::Call::default();
    c.set_type(ty);
    fill(&mut c);
    c
}
