//! Simulated agents: `--simulate-agents N` registers N in-process agents
//! that go through exactly the master code real agents use (registration,
//! allocation, launch, status updates, acknowledgements), but whose tasks do
//! nothing: a LAUNCH is answered with TASK_STARTING and TASK_RUNNING after a
//! configurable delay, a KILL with TASK_KILLED. This is the harness of the
//! scheduler benchmarks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use km_mesos::agent;
use km_mesos::v1::{self, TaskState};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::server::{Input, Sink};

/// How the simulated agents look.
#[derive(Debug, Clone)]
pub(crate) struct SimConfig {
    pub(crate) count: usize,
    /// `--resources` syntax; `{i}` and `{i%N}` are replaced per agent.
    pub(crate) resources: String,
    /// `--attributes` syntax, same placeholders.
    pub(crate) attributes: String,
    /// Hostname pattern, same placeholders.
    pub(crate) hostname: String,
    /// Delay between LAUNCH and TASK_STARTING/TASK_RUNNING.
    pub(crate) task_delay: Duration,
}

/// Expands `{i}` and `{i%N}` in a pattern for agent `i`.
pub(crate) fn expand(pattern: &str, i: usize) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut rest = pattern;
    while let Some(start) = rest.find("{i") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let modifier = &after[..end];
                let value = match modifier.strip_prefix('%').and_then(|m| m.parse::<usize>().ok()) {
                    Some(m) if m > 0 => i % m,
                    _ if modifier.is_empty() => i,
                    _ => {
                        out.push_str(&rest[start..start + 3 + end]);
                        rest = &after[end + 1..];
                        continue;
                    }
                };
                out.push_str(&value.to_string());
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Registers the agents and starts the task that plays their part.
pub(crate) async fn start(
    config: SimConfig,
    inputs: mpsc::UnboundedSender<Input>,
) -> Result<(), String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut ids = Vec::with_capacity(config.count);
    for i in 0..config.count {
        let resources = km_mesos::flags::parse_resources(&expand(&config.resources, i))
            .map_err(|e| format!("--simulate-agent-resources: {e}"))?;
        let attributes = km_mesos::flags::parse_attributes(&expand(&config.attributes, i))
            .map_err(|e| format!("--simulate-agent-attributes: {e}"))?;
        let info = v1::AgentInfo {
            hostname: expand(&config.hostname, i),
            resources,
            attributes,
            port: Some(5051),
            ..Default::default()
        };
        let mut caps = Vec::new();
        for t in [
            v1::agent_info::capability::Type::MultiRole,
            v1::agent_info::capability::Type::HierarchicalRole,
            v1::agent_info::capability::Type::ReservationRefinement,
        ] {
            let mut c = v1::agent_info::Capability::default();
            c.set_type(t);
            caps.push(c);
        }
        let subscribe = agent::call::Subscribe {
            agent_info: info,
            capabilities: caps,
            version: Some(format!("{}-simulated", env!("CARGO_PKG_VERSION"))),
            ..Default::default()
        };
        let (reply, answer) = oneshot::channel();
        inputs
            .send(Input::SubscribeAgent {
                subscribe,
                sink: Sink::Simulated { agent: i, tx: tx.clone() },
                reply,
            })
            .map_err(|_| "master loop stopped".to_owned())?;
        let (_, id) =
            answer.await.map_err(|_| "master loop stopped".to_owned())?.map_err(|r| r.message)?;
        ids.push(id);
    }
    drop(tx);
    tracing::info!(count = config.count, "simulated agents registered");
    tokio::spawn(play(ids, rx, inputs, config.task_delay));
    Ok(())
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    seq: u64,
    agent: usize,
    framework_id: String,
    task_id: String,
}

/// The simulated agents' side: answers launches and kills, keeps updates
/// until the framework acknowledges them, resends on framework failover.
async fn play(
    ids: Vec<String>,
    mut rx: mpsc::UnboundedReceiver<(usize, agent::Event)>,
    inputs: mpsc::UnboundedSender<Input>,
    delay: Duration,
) {
    // (agent, framework, task) → unacknowledged updates, oldest first.
    let mut unacked: BTreeMap<(usize, String, String), Vec<v1::TaskStatus>> = BTreeMap::new();
    let mut due: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    let mut seq = 0u64;
    let send = |agent: usize, fw: &str, status: v1::TaskStatus| {
        let c = agent::Call {
            agent_id: Some(v1::AgentId { value: ids[agent].clone() }),
            status_update: Some(agent::call::StatusUpdate {
                framework_id: v1::FrameworkId { value: fw.into() },
                status,
            }),
            r#type: Some(agent::call::Type::StatusUpdate as i32),
            ..Default::default()
        };
        let _ = inputs.send(Input::AgentCall { call: c, reply: None });
    };
    let status = |task_id: &str, state: TaskState| {
        let mut s = v1::TaskStatus {
            task_id: v1::TaskId { value: task_id.into() },
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            ..Default::default()
        };
        s.set_state(state);
        s.set_source(v1::task_status::Source::Executor);
        s
    };
    loop {
        let next_due = due.peek().map(|Reverse(d)| d.at);
        let event = tokio::select! {
            e = rx.recv() => match e { Some(e) => Some(e), None => break },
            _ = async { if let Some(at) = next_due { tokio::time::sleep_until(at).await } else { std::future::pending::<()>().await } } => None,
        };
        if event.is_none() {
            while due.peek().is_some_and(|Reverse(d)| d.at <= Instant::now()) {
                let Some(Reverse(d)) = due.pop() else { break };
                for state in [TaskState::TaskStarting, TaskState::TaskRunning] {
                    let s = status(&d.task_id, state);
                    unacked
                        .entry((d.agent, d.framework_id.clone(), d.task_id.clone()))
                        .or_default()
                        .push(s.clone());
                    send(d.agent, &d.framework_id, s);
                }
            }
            continue;
        }
        let Some((agent, e)) = event else { continue };
        use agent::event::Type;
        match e.r#type() {
            Type::RunTask | Type::RunTaskGroup => {
                let (fw, tasks): (String, Vec<String>) = match (&e.run_task, &e.run_task_group) {
                    (Some(r), _) => (
                        r.framework_info.id.as_ref().map(|f| f.value.clone()).unwrap_or_default(),
                        vec![r.task.task_id.value.clone()],
                    ),
                    (None, Some(g)) => (
                        g.framework_info.id.as_ref().map(|f| f.value.clone()).unwrap_or_default(),
                        g.task_group.tasks.iter().map(|t| t.task_id.value.clone()).collect(),
                    ),
                    _ => continue,
                };
                for task_id in tasks {
                    seq += 1;
                    due.push(Reverse(Due {
                        at: Instant::now() + delay,
                        seq,
                        agent,
                        framework_id: fw.clone(),
                        task_id,
                    }));
                }
            }
            Type::KillTask => {
                if let Some(k) = e.kill_task {
                    let s = status(&k.task_id.value, TaskState::TaskKilled);
                    unacked
                        .entry((agent, k.framework_id.value.clone(), k.task_id.value))
                        .or_default()
                        .push(s.clone());
                    send(agent, &k.framework_id.value, s);
                }
            }
            Type::Acknowledge => {
                if let Some(a) = e.acknowledge {
                    let key = (agent, a.framework_id.value, a.task_id.value);
                    if let Some(list) = unacked.get_mut(&key) {
                        list.retain(|s| s.uuid.as_deref() != Some(a.uuid.as_slice()));
                        if list.is_empty() {
                            unacked.remove(&key);
                        }
                    }
                }
            }
            Type::UpdateFramework => {
                let fw = e
                    .update_framework
                    .and_then(|u| u.framework_info.id)
                    .map(|f| f.value)
                    .unwrap_or_default();
                for ((a, f, _), list) in &unacked {
                    if *a == agent && *f == fw {
                        for s in list {
                            send(agent, &fw, s.clone());
                        }
                    }
                }
            }
            Type::ShutdownFramework => {
                if let Some(s) = e.shutdown_framework {
                    unacked.retain(|(a, f, _), _| !(*a == agent && *f == s.framework_id.value));
                    due.retain(|Reverse(d)| {
                        !(d.agent == agent && d.framework_id == s.framework_id.value)
                    });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn patterns_expand_per_agent() {
        assert_eq!(expand("sim-{i}", 7), "sim-7");
        assert_eq!(expand("rack:r{i%10};zone:z{i%3}", 14), "rack:r4;zone:z2");
        assert_eq!(expand("plain", 3), "plain");
        assert_eq!(expand("odd{i%x}", 3), "odd{i%x}");
    }
}
