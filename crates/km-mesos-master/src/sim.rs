//! Simulated agents: `--simulate-agents N` registers N in-process agents
//! that go through exactly the master code real agents use (registration,
//! allocation, launch, status updates, acknowledgements), but whose tasks do
//! nothing: a LAUNCH is answered with TASK_STARTING and TASK_RUNNING after a
//! configurable delay, a KILL with TASK_KILLED. This is the harness of the
//! scheduler benchmarks.
//!
//! With `--work_dir` they keep a checkpoint, as real agents do: their IDs and
//! the tasks they run, written before the updates that announce a change are
//! sent. A master killed and restarted over the same directory gets them back
//! re-registering with their tasks, so a chaos run can restart the master
//! without losing the pods on simulated agents.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use km_mesos::agent;
use km_mesos::v1::{self, TaskState};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::server::{Input, Sink};

/// Name of the checkpoint file under `--work_dir`.
pub(crate) const CHECKPOINT: &str = "simulated-agents.pb";

/// Events handled between two checkpoints (a burst of launches is written once).
const BATCH: usize = 4096;

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
    /// Where the agents keep their checkpoint, if anywhere.
    pub(crate) checkpoint: Option<PathBuf>,
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

/// One simulated agent: what it sends to (re-)register, and what it runs.
#[derive(Debug, Clone)]
struct SimAgent {
    /// Agent info (with its ID once registered), capabilities, version.
    subscribe: agent::call::Subscribe,
    frameworks: BTreeMap<String, v1::FrameworkInfo>,
    executors: BTreeMap<(String, String), v1::ExecutorInfo>,
    /// (framework, task) → the task, in its latest state.
    tasks: BTreeMap<(String, String), v1::Task>,
}

impl SimAgent {
    fn new(subscribe: agent::call::Subscribe) -> SimAgent {
        SimAgent {
            subscribe,
            frameworks: BTreeMap::new(),
            executors: BTreeMap::new(),
            tasks: BTreeMap::new(),
        }
    }

    /// Back from a checkpoint, with today's agent info but yesterday's ID and tasks.
    fn restore(saved: agent::call::Subscribe, mut fresh: agent::call::Subscribe) -> SimAgent {
        fresh.agent_info.id = saved.agent_info.id;
        let mut sim = SimAgent::new(fresh);
        for f in saved.frameworks {
            if let Some(id) = f.id.as_ref().map(|i| i.value.clone()) {
                sim.frameworks.insert(id, f);
            }
        }
        for e in saved.executors {
            let fw = e.framework_id.as_ref().map(|f| f.value.clone()).unwrap_or_default();
            sim.executors.insert((fw, e.executor_id.value.clone()), e);
        }
        for t in saved.tasks {
            sim.tasks.insert((t.framework_id.value.clone(), t.task_id.value.clone()), t);
        }
        sim
    }

    /// The Subscribe that re-registers this agent with everything it runs.
    fn checkpoint(&self) -> agent::call::Subscribe {
        let mut s = self.subscribe.clone();
        s.frameworks = self.frameworks.values().cloned().collect();
        s.executors = self.executors.values().cloned().collect();
        s.tasks = self.tasks.values().cloned().collect();
        s
    }

    fn id(&self) -> String {
        self.subscribe.agent_info.id.as_ref().map(|i| i.value.clone()).unwrap_or_default()
    }

    /// Drops the executors and frameworks no task of this agent uses any more.
    fn forget_idle(&mut self) {
        let tasks = &self.tasks;
        self.executors.retain(|(fw, ex), _| {
            tasks.iter().any(|((f, _), t)| {
                f == fw && t.executor_id.as_ref().is_some_and(|e| &e.value == ex)
            })
        });
        self.frameworks.retain(|fw, _| tasks.keys().any(|(f, _)| f == fw));
    }
}

/// The Subscribe of agent `i` as the flags describe it.
fn fresh(config: &SimConfig, i: usize) -> Result<agent::call::Subscribe, String> {
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
    Ok(agent::call::Subscribe {
        agent_info: info,
        capabilities: caps,
        version: Some(format!("{}-simulated", env!("CARGO_PKG_VERSION"))),
        ..Default::default()
    })
}

/// Reads the checkpoint; empty when there is none.
fn load(path: &Path) -> Result<Vec<agent::call::Subscribe>, String> {
    match std::fs::read(path) {
        Ok(bytes) => {
            agent::SimulatedAgents::decode(bytes.as_slice()).map(|s| s.agents).map_err(|e| {
                format!(
                    "the simulated agents' checkpoint {} is corrupt ({e}); move it away to start \
                     them afresh",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Replaces the checkpoint atomically. No fsync: the agents live and die with this process,
/// so what must survive is a kill of the process, which the page cache does.
fn store(path: &Path, agents: agent::SimulatedAgents) -> std::io::Result<()> {
    let tmp = path.with_extension("pb.tmp");
    std::fs::write(&tmp, agents.encode_to_vec())?;
    std::fs::rename(&tmp, path)
}

/// Registers one agent with the master loop; its ID.
async fn register(
    inputs: &mpsc::UnboundedSender<Input>,
    tx: &mpsc::UnboundedSender<(usize, agent::Event)>,
    agent: usize,
    subscribe: agent::call::Subscribe,
) -> Result<String, String> {
    let (reply, answer) = oneshot::channel();
    inputs
        .send(Input::SubscribeAgent {
            subscribe,
            sink: Sink::Simulated { agent, tx: tx.clone() },
            peer: None,
            reply,
        })
        .map_err(|_| "master loop stopped".to_owned())?;
    let (_, id) =
        answer.await.map_err(|_| "master loop stopped".to_owned())?.map_err(|r| r.message)?;
    Ok(id)
}

/// Registers the agents (re-registers those in the checkpoint, with their tasks) and starts
/// the task that plays their part.
pub(crate) async fn start(
    config: SimConfig,
    inputs: mpsc::UnboundedSender<Input>,
) -> Result<(), String> {
    let saved = match &config.checkpoint {
        Some(path) => load(path)?,
        None => Vec::new(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut agents = Vec::with_capacity(config.count);
    let mut returning = 0usize;
    for i in 0..config.count {
        let fresh = fresh(&config, i)?;
        let mut sim = match saved.get(i) {
            Some(s) if s.agent_info.hostname == fresh.agent_info.hostname => {
                SimAgent::restore(s.clone(), fresh.clone())
            }
            _ => SimAgent::new(fresh.clone()),
        };
        let id = match register(&inputs, &tx, i, sim.checkpoint()).await {
            Ok(id) => {
                returning += usize::from(!sim.id().is_empty());
                id
            }
            Err(reason) if !sim.id().is_empty() => {
                // Marked gone while the master was away: its tasks are gone too.
                tracing::warn!(agent = %sim.id(), %reason, "a simulated agent registers afresh");
                sim = SimAgent::new(fresh);
                register(&inputs, &tx, i, sim.checkpoint()).await?
            }
            Err(reason) => return Err(reason),
        };
        sim.subscribe.agent_info.id = Some(v1::AgentId { value: id.clone() });
        for t in sim.tasks.values_mut() {
            t.agent_id = v1::AgentId { value: id.clone() };
        }
        agents.push(sim);
    }
    drop(tx);
    let tasks: usize = agents.iter().map(|a| a.tasks.len()).sum();
    tracing::info!(count = config.count, returning, tasks, "simulated agents registered");
    let mut play = Play {
        agents,
        inputs,
        checkpoint: config.checkpoint,
        delay: config.task_delay,
        dirty: true,
        outbox: Vec::new(),
        unacked: BTreeMap::new(),
        due: BinaryHeap::new(),
        seq: 0,
    };
    // Tasks launched but not yet running when the master stopped start now.
    let staging: Vec<(usize, String, String)> = play
        .agents
        .iter()
        .enumerate()
        .flat_map(|(i, a)| {
            a.tasks
                .iter()
                .filter(|(_, t)| t.state() == TaskState::TaskStaging)
                .map(move |((fw, task), _)| (i, fw.clone(), task.clone()))
        })
        .collect();
    for (agent, framework_id, task_id) in staging {
        play.schedule(agent, framework_id, task_id, Duration::ZERO);
    }
    tokio::spawn(play.run(rx));
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

/// The simulated agents' side: answers launches and kills, keeps updates until the framework
/// acknowledges them, resends on framework failover, and checkpoints before it tells.
struct Play {
    agents: Vec<SimAgent>,
    inputs: mpsc::UnboundedSender<Input>,
    checkpoint: Option<PathBuf>,
    delay: Duration,
    /// The checkpoint is behind the agents.
    dirty: bool,
    /// Updates to send once the checkpoint holds what they announce.
    outbox: Vec<(usize, String, v1::TaskStatus)>,
    /// (agent, framework, task) → unacknowledged updates, oldest first.
    unacked: BTreeMap<(usize, String, String), Vec<v1::TaskStatus>>,
    due: BinaryHeap<Reverse<Due>>,
    seq: u64,
}

impl Play {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<(usize, agent::Event)>) {
        loop {
            let next_due = self.due.peek().map(|Reverse(d)| d.at);
            tokio::select! {
                e = rx.recv() => match e {
                    Some((agent, e)) => self.on_event(agent, e),
                    None => break,
                },
                _ = async { if let Some(at) = next_due { tokio::time::sleep_until(at).await } else { std::future::pending::<()>().await } } => {},
            }
            for _ in 0..BATCH {
                match rx.try_recv() {
                    Ok((agent, e)) => self.on_event(agent, e),
                    Err(_) => break,
                }
            }
            self.start_due();
            self.flush().await;
        }
    }

    fn schedule(&mut self, agent: usize, framework_id: String, task_id: String, after: Duration) {
        self.seq += 1;
        self.due.push(Reverse(Due {
            at: Instant::now() + after,
            seq: self.seq,
            agent,
            framework_id,
            task_id,
        }));
    }

    fn status(task_id: &str, state: TaskState) -> v1::TaskStatus {
        let mut s = v1::TaskStatus {
            task_id: v1::TaskId { value: task_id.into() },
            uuid: Some(uuid::Uuid::new_v4().as_bytes().to_vec()),
            ..Default::default()
        };
        s.set_state(state);
        s.set_source(v1::task_status::Source::Executor);
        s
    }

    /// Queues an update until acknowledged and for sending after the next checkpoint.
    fn tell(&mut self, agent: usize, fw: &str, status: v1::TaskStatus) {
        self.unacked
            .entry((agent, fw.to_owned(), status.task_id.value.clone()))
            .or_default()
            .push(status.clone());
        self.outbox.push((agent, fw.to_owned(), status));
    }

    fn send(&self, agent: usize, fw: &str, status: v1::TaskStatus) {
        let c = agent::Call {
            agent_id: Some(v1::AgentId { value: self.agents[agent].id() }),
            status_update: Some(agent::call::StatusUpdate {
                framework_id: v1::FrameworkId { value: fw.into() },
                status,
            }),
            r#type: Some(agent::call::Type::StatusUpdate as i32),
            ..Default::default()
        };
        let _ = self.inputs.send(Input::AgentCall { call: c, reply: None });
    }

    /// Launched tasks whose delay has passed start running.
    fn start_due(&mut self) {
        while self.due.peek().is_some_and(|Reverse(d)| d.at <= Instant::now()) {
            let Some(Reverse(d)) = self.due.pop() else { break };
            let key = (d.framework_id.clone(), d.task_id.clone());
            let Some(task) = self.agents[d.agent].tasks.get_mut(&key) else { continue };
            task.set_state(TaskState::TaskRunning);
            self.dirty = true;
            for state in [TaskState::TaskStarting, TaskState::TaskRunning] {
                self.tell(d.agent, &d.framework_id, Self::status(&d.task_id, state));
            }
        }
    }

    /// Writes the checkpoint if it is behind, then sends what waited for it.
    async fn flush(&mut self) {
        if std::mem::take(&mut self.dirty)
            && let Some(path) = self.checkpoint.clone()
        {
            let agents = agent::SimulatedAgents {
                agents: self.agents.iter().map(SimAgent::checkpoint).collect(),
            };
            let written = tokio::task::spawn_blocking(move || store(&path, agents)).await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot write the simulated agents' checkpoint")
                }
                Err(e) => tracing::warn!(error = %e, "the checkpoint writer failed"),
            }
        }
        for (agent, fw, status) in std::mem::take(&mut self.outbox) {
            self.send(agent, &fw, status);
        }
    }

    fn launch(
        &mut self,
        agent: usize,
        framework: &v1::FrameworkInfo,
        executor: Option<v1::ExecutorInfo>,
        task: v1::TaskInfo,
    ) {
        let fw = framework.id.as_ref().map(|f| f.value.clone()).unwrap_or_default();
        let sim = &mut self.agents[agent];
        sim.frameworks.insert(fw.clone(), framework.clone());
        let executor_id = executor.map(|mut e| {
            e.framework_id = Some(v1::FrameworkId { value: fw.clone() });
            let id = e.executor_id.clone();
            sim.executors.insert((fw.clone(), id.value.clone()), e);
            id
        });
        let mut t = v1::Task {
            name: task.name,
            task_id: task.task_id.clone(),
            framework_id: v1::FrameworkId { value: fw.clone() },
            executor_id,
            agent_id: v1::AgentId { value: sim.id() },
            resources: task.resources,
            labels: task.labels,
            ..Default::default()
        };
        t.set_state(TaskState::TaskStaging);
        sim.tasks.insert((fw.clone(), task.task_id.value.clone()), t);
        self.dirty = true;
        let delay = self.delay;
        self.schedule(agent, fw, task.task_id.value, delay);
    }

    fn on_event(&mut self, agent: usize, e: agent::Event) {
        use agent::event::Type;
        match e.r#type() {
            Type::RunTask => {
                if let Some(r) = e.run_task {
                    let executor = r.task.executor.clone();
                    self.launch(agent, &r.framework_info, executor, r.task);
                }
            }
            Type::RunTaskGroup => {
                if let Some(g) = e.run_task_group {
                    for task in g.task_group.tasks {
                        self.launch(agent, &g.framework_info, Some(g.executor.clone()), task);
                    }
                }
            }
            Type::KillTask => {
                if let Some(k) = e.kill_task {
                    let sim = &mut self.agents[agent];
                    sim.tasks.remove(&(k.framework_id.value.clone(), k.task_id.value.clone()));
                    sim.forget_idle();
                    self.dirty = true;
                    let s = Self::status(&k.task_id.value, TaskState::TaskKilled);
                    self.tell(agent, &k.framework_id.value, s);
                }
            }
            Type::Acknowledge => {
                if let Some(a) = e.acknowledge {
                    let key = (agent, a.framework_id.value, a.task_id.value);
                    if let Some(list) = self.unacked.get_mut(&key) {
                        list.retain(|s| s.uuid.as_deref() != Some(a.uuid.as_slice()));
                        if list.is_empty() {
                            self.unacked.remove(&key);
                        }
                    }
                }
            }
            Type::UpdateFramework => {
                let Some(info) = e.update_framework.map(|u| u.framework_info) else { return };
                let fw = info.id.as_ref().map(|f| f.value.clone()).unwrap_or_default();
                if let Some(known) = self.agents[agent].frameworks.get_mut(&fw) {
                    *known = info;
                    self.dirty = true;
                }
                for ((a, f, _), list) in &self.unacked {
                    if *a == agent && *f == fw {
                        for s in list {
                            self.outbox.push((agent, fw.clone(), s.clone()));
                        }
                    }
                }
            }
            Type::ShutdownFramework => {
                if let Some(s) = e.shutdown_framework {
                    let fw = s.framework_id.value;
                    self.unacked.retain(|(a, f, _), _| !(*a == agent && *f == fw));
                    self.due.retain(|Reverse(d)| !(d.agent == agent && d.framework_id == fw));
                    let sim = &mut self.agents[agent];
                    sim.tasks.retain(|(f, _), _| *f != fw);
                    sim.forget_idle();
                    self.dirty = true;
                }
            }
            Type::Heartbeat => {
                let c = agent::Call {
                    agent_id: Some(v1::AgentId { value: self.agents[agent].id() }),
                    r#type: Some(agent::call::Type::Pong as i32),
                    ..Default::default()
                };
                let _ = self.inputs.send(Input::AgentCall { call: c, reply: None });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(fw: &str, id: &str, executor: &str) -> v1::Task {
        v1::Task {
            name: id.into(),
            task_id: v1::TaskId { value: id.into() },
            framework_id: v1::FrameworkId { value: fw.into() },
            executor_id: Some(v1::ExecutorId { value: executor.into() }),
            ..Default::default()
        }
    }

    #[test]
    fn an_agent_comes_back_from_its_checkpoint_with_its_id_and_tasks_and_todays_resources() {
        let config = SimConfig {
            count: 1,
            resources: "cpus:4;mem:1024".into(),
            attributes: "rack:r{i}".into(),
            hostname: "sim-{i}".into(),
            task_delay: Duration::ZERO,
            checkpoint: None,
        };
        let mut sim = SimAgent::new(fresh(&config, 0).unwrap());
        sim.subscribe.agent_info.id = Some(v1::AgentId { value: "A-S0".into() });
        let fw = v1::FrameworkInfo {
            id: Some(v1::FrameworkId { value: "F".into() }),
            ..Default::default()
        };
        sim.frameworks.insert("F".into(), fw);
        let executor = v1::ExecutorInfo {
            executor_id: v1::ExecutorId { value: "E".into() },
            framework_id: Some(v1::FrameworkId { value: "F".into() }),
            ..Default::default()
        };
        sim.executors.insert(("F".into(), "E".into()), executor);
        sim.tasks.insert(("F".into(), "t1".into()), task("F", "t1", "E"));

        let dir = std::env::temp_dir().join(format!("km-sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(CHECKPOINT);
        assert!(load(&path).unwrap().is_empty());
        store(&path, agent::SimulatedAgents { agents: vec![sim.checkpoint()] }).unwrap();
        let saved = load(&path).unwrap();
        let today = SimConfig { resources: "cpus:8;mem:1024".into(), ..config.clone() };
        let back = SimAgent::restore(saved[0].clone(), fresh(&today, 0).unwrap());
        assert_eq!(back.id(), "A-S0");
        assert_eq!(back.tasks.len(), 1);
        assert_eq!(back.executors.len(), 1);
        let cpus = back.subscribe.agent_info.resources.iter().find(|r| r.name == "cpus");
        assert_eq!(cpus.and_then(|r| r.scalar.as_ref()).map(|s| s.value), Some(8.0));

        // The last task gone, its executor and framework go too.
        let mut back = back;
        back.tasks.clear();
        back.forget_idle();
        assert!(back.executors.is_empty() && back.frameworks.is_empty());

        std::fs::write(&path, [0xff, 0xff, 0xff]).unwrap();
        assert!(load(&path).unwrap_err().contains("corrupt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn patterns_expand_per_agent() {
        assert_eq!(expand("sim-{i}", 7), "sim-7");
        assert_eq!(expand("rack:r{i%10};zone:z{i%3}", 14), "rack:r4;zone:z2");
        assert_eq!(expand("plain", 3), "plain");
        assert_eq!(expand("odd{i%x}", 3), "odd{i%x}");
    }
}
