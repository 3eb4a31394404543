//! The executor's loop: Mesos events in, pods started and stopped, task states and pod status
//! out.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::Context as _;
use k8s_openapi::api::core::v1 as k8s;
use km_mesos::ContentType;
use km_mesos::executor::{Event, Executor, ExecutorEnv, MesosEvent};
use km_mesos::v1::{self, executor::event};
use km_runtime::PodManager;
use km_runtime::docker::DockerRuntime;
use km_runtime::native::NativeRuntime;
use km_runtime::pod::NodeContext;
use km_runtime::status::PodSnapshot;
use km_scheduler_core::task::{NODE_EXECUTOR_ID, NODE_EXECUTOR_RESOURCES};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::Args;
use crate::http::Metrics;
use crate::registry::{self, Scope};
use crate::report::{self, Report, State};

/// How often deadlines (launch grace, suicide) and static pod statuses are looked at.
const TICK: Duration = Duration::from_secs(1);

/// A pod the executor runs for a task.
struct TaskRun {
    uid: String,
    namespace: String,
    name: String,
    launched: Instant,
    last: Option<Report>,
    /// A stop is under way (kill, failed launch, shutdown); its outcome decides the last report.
    stopping: bool,
}

/// Why a pod was stopped, and so what its task ends as.
enum Stopped {
    /// KILL (or shutdown): TASK_KILLED.
    Killed(String),
    /// It did not run within the launch grace period: TASK_FAILED.
    Failed(String),
    /// It had ended by itself; only its sandbox went.
    Cleanup,
}

/// The name of this executor's scope: its Mesos container (the sandbox directory's name).
fn instance_name(env: &ExecutorEnv) -> String {
    let base = env.directory.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let clean: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if clean.is_empty() { format!("pid-{}", std::process::id()) } else { clean }
}

fn agent_ip(env: &ExecutorEnv) -> String {
    let host = env.agent_endpoint.rsplit_once(':').map_or(env.agent_endpoint.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<IpAddr>().is_ok() { host.to_owned() } else { "127.0.0.1".to_owned() }
}

async fn runtimes(
    scope: &Scope,
    args: &Args,
) -> anyhow::Result<(Option<Arc<NativeRuntime>>, Option<Arc<DockerRuntime>>)> {
    km_kubelet::open_runtimes(
        &scope.root,
        &scope.cgroup_parent,
        scope.docker_owner.clone(),
        &args.pod_infra_container_image,
        args.docker,
        // An executor's pods die with it; the next executor removes what is left.
        false,
    )
    .await
}

/// Removes what executors that died on this host left behind.
async fn clean_dead(args: &Args) {
    for dead in registry::dead(&args.state_dir) {
        let scope = &dead.scope;
        match runtimes(scope, args).await {
            Ok((native, docker)) => {
                let manager = PodManager::new(native, docker, NodeContext::default());
                match manager.remove_orphans().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        executor = scope.instance,
                        pods = n,
                        "removed the pods of an executor that died"
                    ),
                    Err(e) => {
                        tracing::warn!(
                            executor = scope.instance,
                            "cannot remove the pods of an executor that died: {e}"
                        );
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(executor = scope.instance, "{e}");
                continue;
            }
        }
        for h in ["", "cpu", "cpuacct", "memory", "pids", "cpu,cpuacct"] {
            let _ =
                std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(h).join(&scope.cgroup_parent));
        }
        let _ = std::fs::remove_dir_all(&scope.root);
        let _ = std::fs::remove_file(&dead.path);
    }
}

/// The static pods shipped in `ExecutorInfo.data` (a gzipped v1 PodList), with their static
/// identity on this node.
fn static_pods(data: Option<&[u8]>, node: &str) -> Vec<k8s::Pod> {
    let Some(data) = data.filter(|d| !d.is_empty()) else { return Vec::new() };
    let mut json = Vec::new();
    if let Err(e) = flate2::read::GzDecoder::new(data).read_to_end(&mut json) {
        tracing::error!("the static pods in ExecutorInfo.data are not gzip: {e}");
        return Vec::new();
    }
    #[derive(serde::Deserialize)]
    struct PodList {
        items: Vec<k8s::Pod>,
    }
    let list: PodList = match serde_json::from_slice(&json) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("the static pods in ExecutorInfo.data are not a PodList: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for p in list.items {
        let file = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(km_kubelet::source::ANNOTATION_FILENAME))
            .cloned()
            .unwrap_or_else(|| p.metadata.name.clone().unwrap_or_default());
        let bytes = match serde_json::to_vec(&p) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(file, "static pod: {e}");
                continue;
            }
        };
        match km_kubelet::source::parse(Path::new(&file), &bytes, node) {
            km_kubelet::source::Entry::Pod { pod, .. } => out.push(*pod),
            km_kubelet::source::Entry::Bad { error, .. } => {
                tracing::error!(file, "static pod: {error}")
            }
        }
    }
    out
}

fn task_status(
    task_id: &str,
    agent_id: &Option<v1::AgentId>,
    state: v1::TaskState,
    reason: Option<&str>,
    message: &str,
    healthy: Option<bool>,
    data: Option<Vec<u8>>,
) -> v1::TaskStatus {
    let mut s = v1::TaskStatus {
        task_id: v1::TaskId { value: task_id.to_owned() },
        agent_id: agent_id.clone(),
        message: Some(message.to_owned()),
        healthy,
        data,
        ..Default::default()
    };
    s.set_state(state);
    if let Some(r) = reason.and_then(v1::task_status::Reason::from_str_name) {
        s.set_reason(r);
    }
    s
}

fn mesos_state(s: State) -> v1::TaskState {
    match s {
        State::Starting => v1::TaskState::TaskStarting,
        State::Running => v1::TaskState::TaskRunning,
        State::Finished => v1::TaskState::TaskFinished,
        State::Failed => v1::TaskState::TaskFailed,
        State::Killed => v1::TaskState::TaskKilled,
    }
}

/// The pod status as the original executor put it in `TaskStatus.data`.
fn status_data(t: &TaskRun, status: &k8s::PodStatus) -> Option<Vec<u8>> {
    let v = json!({
        "apiVersion": "v1",
        "kind": "PodStatusResult",
        "metadata": { "name": t.name, "namespace": t.namespace, "uid": t.uid },
        "status": status,
    });
    serde_json::to_vec(&v).ok()
}

/// Keeps the API's copy of pod statuses current: the latest status per pod, written by a few
/// workers, conditional on the pod's UID.
#[derive(Clone)]
struct StatusWriter {
    tx: Option<mpsc::UnboundedSender<(String, String, String, k8s::PodStatus)>>,
}

impl StatusWriter {
    fn start(client: Option<kube::Client>) -> StatusWriter {
        let Some(client) = client else { return StatusWriter { tx: None } };
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, String, String, k8s::PodStatus)>();
        tokio::spawn(async move {
            let mut latest: BTreeMap<String, (String, String, k8s::PodStatus)> = BTreeMap::new();
            loop {
                if latest.is_empty() {
                    match rx.recv().await {
                        Some((uid, ns, name, st)) => {
                            latest.insert(uid, (ns, name, st));
                        }
                        None => return,
                    }
                }
                while let Ok((uid, ns, name, st)) = rx.try_recv() {
                    latest.insert(uid, (ns, name, st));
                }
                let batch = std::mem::take(&mut latest);
                let writes = batch.into_iter().map(|(uid, (ns, name, st))| {
                    let client = client.clone();
                    async move {
                        if let Err(e) = write_status(&client, &uid, &ns, &name, &st).await {
                            tracing::debug!(
                                pod = format!("{ns}/{name}"),
                                "writing the pod status: {e}"
                            );
                        }
                    }
                });
                futures::stream::iter(writes).buffer_unordered(8).for_each(|()| async {}).await;
            }
        });
        StatusWriter { tx: Some(tx) }
    }

    fn write(&self, t: &TaskRun, status: &k8s::PodStatus) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((t.uid.clone(), t.namespace.clone(), t.name.clone(), status.clone()));
        }
    }
}

use futures::StreamExt as _;

async fn write_status(
    client: &kube::Client,
    uid: &str,
    ns: &str,
    name: &str,
    status: &k8s::PodStatus,
) -> Result<(), kube::Error> {
    let ops = json!([
        { "op": "test", "path": "/metadata/uid", "value": uid },
        { "op": "add", "path": "/status", "value": status },
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{ns}/pods"))
        .patch_subresource(
            "status",
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Json::<()>(patch),
        )
        .map_err(kube::Error::BuildRequest)?;
    client.request_text(request).await.map(drop)
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let env = ExecutorEnv::from_env().context("km executor runs under a Mesos agent")?;
    let instance = instance_name(&env);
    clean_dead(&args).await;
    let scope = Scope {
        instance: instance.clone(),
        // Not `km`: that is where the agent puts the executor binary it fetched.
        root: env.directory.join("km-pods"),
        cgroup_parent: format!("km-executor/{instance}"),
        docker_owner: format!("km-executor-{instance}"),
    };
    let registration = registry::register(&args.state_dir, &scope)
        .with_context(|| format!("registering in --state-dir {}", args.state_dir.display()))?;
    tracing::info!(executor = %env.executor_id.value, scope = %registration.path().display(), "km executor starting");
    let host_ip = agent_ip(&env);
    let (exec, mut events) =
        Executor::start(env.clone(), ContentType::Protobuf).context("the executor API client")?;

    // SUBSCRIBED comes first: it names the agent and carries the ExecutorInfo.
    let subscribed = loop {
        match events.recv().await {
            Some(Event::Mesos(e)) if e.r#type() == event::Type::Subscribed => {
                if let Some(s) = e.subscribed {
                    break s;
                }
            }
            Some(Event::Mesos(e)) => {
                tracing::warn!(event = ?e.r#type(), "event before SUBSCRIBED ignored")
            }
            Some(Event::Disconnected { reason }) => tracing::warn!(%reason, "not subscribed yet"),
            None => anyhow::bail!(
                "the agent at {} did not take the executor's subscription",
                env.agent_endpoint
            ),
        }
    };
    let node_name = subscribed.agent_info.hostname.clone();
    let agent_id = subscribed
        .agent_info
        .id
        .clone()
        .or_else(|| env.agent_id.clone().map(|value| v1::AgentId { value }));
    let (native, docker) = runtimes(&scope, &args).await?;
    let manager = Arc::new(PodManager::new(
        native,
        docker,
        NodeContext { node_name: node_name.clone(), host_ip: host_ip.clone() },
    ));
    let api = km_kubelet::mirror::clients(&args.api_servers, args.kubeconfig.as_deref()).await?;
    let statuses = StatusWriter::start(api.first().cloned());
    let metrics = Arc::new(Metrics::new());
    let listen = std::net::SocketAddr::new(
        args.address.unwrap_or_else(|| host_ip.parse().unwrap_or(IpAddr::from([127, 0, 0, 1]))),
        args.port,
    );
    let token = match &args.proxy_token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let pods = crate::http::Pods { manager: manager.clone(), token };
    let http = crate::http::serve(listen, metrics.clone(), pods).await?;
    tracing::info!(node = node_name, addr = %http, "subscribed to the agent");

    // Static pods, mirrored with the Node's heartbeat.
    let statics = static_pods(subscribed.executor_info.data.as_deref(), &node_name);
    for p in &statics {
        if let Err(e) = manager.run(p) {
            tracing::error!(pod = ?p.metadata.name, "static pod: {e}");
        }
    }
    let (mirror_tx, mirror_rx) = watch::channel(Vec::new());
    // The Node carries this executor's ID and resources (as k8sm's executor did), so that a
    // restarted scheduler rebuilds the same ExecutorInfo for this agent.
    let executor_info = &subscribed.executor_info;
    let node_spec = km_kubelet::mirror::NodeSpec {
        name: node_name.clone(),
        host_ip: host_ip.clone(),
        port: http.port(),
        annotations: [
            (NODE_EXECUTOR_ID.to_owned(), executor_info.executor_id.value.clone()),
            (
                NODE_EXECUTOR_RESOURCES.to_owned(),
                km_mesos::resources::encode_node_annotation(&executor_info.resources),
            ),
        ]
        .into(),
        create: false,
    };
    let mirror = (!api.is_empty())
        .then(|| tokio::spawn(km_kubelet::mirror::run(api.clone(), node_spec, mirror_rx)));

    let mut state = Loop {
        exec,
        agent_id,
        manager,
        statuses,
        metrics,
        api,
        tasks: HashMap::new(),
        statics,
        idle_since: Some(Instant::now()),
        kamikaze: false,
        args: args.clone(),
        shutdown_grace: env.shutdown_grace_period,
    };
    let (snap_tx, mut snap_rx) = mpsc::unbounded_channel::<(String, PodSnapshot)>();
    let (stop_tx, mut stop_rx) = mpsc::unbounded_channel::<(String, Stopped)>();
    let mut tick = tokio::time::interval(TICK);
    let mut stop = km_process::StopSignals::install()?;
    let reason = loop {
        tokio::select! {
            ev = events.recv() => match ev {
                None => break "the agent is gone for good".to_owned(),
                Some(Event::Disconnected { reason }) => tracing::warn!(%reason, "lost the agent; re-subscribing"),
                Some(Event::Mesos(e)) => if let Some(why) = state.mesos(e, &snap_tx, &stop_tx).await { break why },
            },
            Some((task_id, snap)) = snap_rx.recv() => state.snapshot(&task_id, snap, &stop_tx),
            Some((task_id, how)) = stop_rx.recv() => state.stopped(&task_id, how).await,
            _ = tick.tick() => {
                if let Some(why) = state.tick(&stop_tx) { break why }
                let _ = mirror_tx.send(state.static_with_status());
            }
            s = stop.recv() => break s.to_string(),
        }
    };
    tracing::info!(%reason, "shutting down: stopping every pod");
    state.shutdown(&reason).await;
    if let Some(m) = mirror {
        m.abort();
    }
    drop(registration);
    Ok(())
}

/// The loop's state.
struct Loop {
    exec: Executor,
    agent_id: Option<v1::AgentId>,
    manager: Arc<PodManager>,
    statuses: StatusWriter,
    metrics: Arc<Metrics>,
    api: Vec<kube::Client>,
    tasks: HashMap<String, TaskRun>,
    statics: Vec<k8s::Pod>,
    idle_since: Option<Instant>,
    kamikaze: bool,
    args: Args,
    shutdown_grace: Duration,
}

impl Loop {
    fn send(&self, status: v1::TaskStatus) {
        let exec = self.exec.clone();
        tokio::spawn(async move {
            let task = status.task_id.value.clone();
            if let Err(e) = exec.update(status).await {
                // Kept by the client and sent again on re-subscription.
                tracing::warn!(task, "status update not delivered yet: {e}");
            }
        });
    }

    /// Handles a Mesos event; `Some(reason)` to shut down.
    async fn mesos(
        &mut self,
        e: MesosEvent,
        snaps: &mpsc::UnboundedSender<(String, PodSnapshot)>,
        stops: &mpsc::UnboundedSender<(String, Stopped)>,
    ) -> Option<String> {
        match e.r#type() {
            event::Type::Launch => {
                if let Some(l) = e.launch {
                    self.launch(l.task, snaps).await;
                }
            }
            event::Type::LaunchGroup => {
                for t in e.launch_group.map(|g| g.task_group.tasks).unwrap_or_default() {
                    let id = t.task_id.value.clone();
                    self.send(task_status(
                        &id,
                        &self.agent_id,
                        v1::TaskState::TaskError,
                        Some("REASON_TASK_INVALID"),
                        "km executor runs one pod per task; task groups are not supported",
                        None,
                        None,
                    ));
                }
            }
            event::Type::Kill => {
                if let Some(k) = e.kill {
                    let grace = k
                        .kill_policy
                        .and_then(|p| p.grace_period)
                        .map(|d| Duration::from_nanos(d.nanoseconds.max(0).unsigned_abs()));
                    self.kill(
                        &k.task_id.value,
                        grace,
                        Stopped::Killed(format!(
                            "killed{}",
                            grace.map_or(String::new(), |g| format!(
                                " with a grace period of {}s",
                                g.as_secs()
                            ))
                        )),
                        stops,
                    );
                }
            }
            event::Type::Message => {
                let data = e.message.map(|m| m.data).unwrap_or_default();
                if data == b"kamikaze" {
                    tracing::info!("kamikaze: exiting once no pod runs");
                    self.kamikaze = true;
                    if self.tasks.is_empty() {
                        return Some("kamikaze".to_owned());
                    }
                } else {
                    tracing::info!(bytes = data.len(), "message from the scheduler ignored");
                }
            }
            event::Type::Shutdown => return Some("SHUTDOWN from the agent".to_owned()),
            event::Type::Error => {
                let m = e.error.map(|x| x.message).unwrap_or_default();
                return Some(format!("ERROR from the agent: {m}"));
            }
            event::Type::Subscribed => tracing::info!("re-subscribed to the agent"),
            _ => {}
        }
        None
    }

    async fn launch(
        &mut self,
        task: v1::TaskInfo,
        snaps: &mpsc::UnboundedSender<(String, PodSnapshot)>,
    ) {
        let id = task.task_id.value.clone();
        if self.tasks.contains_key(&id) {
            return;
        }
        let fail = |reason: &str, message: String| {
            task_status(
                &id,
                &self.agent_id,
                v1::TaskState::TaskFailed,
                Some(reason),
                &message,
                None,
                None,
            )
        };
        let pod: k8s::Pod = match task.data.as_deref().map(serde_json::from_slice::<k8s::Pod>) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                return self.send(fail(
                    "REASON_TASK_INVALID",
                    format!("TaskInfo.data is not a v1 pod: {e}"),
                ));
            }
            None => {
                return self.send(fail(
                    "REASON_TASK_INVALID",
                    "TaskInfo.data is empty: km tasks carry their pod there".into(),
                ));
            }
        };
        let (Some(uid), Some(name)) = (pod.metadata.uid.clone(), pod.metadata.name.clone()) else {
            return self.send(fail(
                "REASON_TASK_INVALID",
                "the pod in TaskInfo.data has no name or uid".into(),
            ));
        };
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let mut pod = pod;
        if !self.args.allow_privileged && privileged(&pod) {
            return self.send(fail("REASON_TASK_INVALID", "the pod asks for a privileged container and the executor runs without --allow-privileged".into()));
        }
        // ConfigMaps and Secrets the pod refers to, read from the API.
        let refs = km_kubelet::config::referenced(&pod);
        if !refs.is_empty() {
            match self.resolve(&pod, &refs).await {
                Ok(p) => pod = p,
                Err(message) => {
                    return self.send(fail(
                        "REASON_CONTAINER_LAUNCH_FAILED",
                        format!("CreateContainerConfigError: {message}"),
                    ));
                }
            }
        }
        if let Err(e) = self.manager.run(&pod) {
            self.metrics.failure();
            return self.send(fail(
                "REASON_CONTAINER_LAUNCH_FAILED",
                format!("cannot start the pod: {e}"),
            ));
        }
        self.metrics.start();
        let run = TaskRun {
            uid: uid.clone(),
            namespace,
            name,
            launched: Instant::now(),
            last: None,
            stopping: false,
        };
        tracing::info!(task = id, pod = format!("{}/{}", run.namespace, run.name), "launching");
        self.tasks.insert(id.clone(), run);
        self.idle_since = None;
        if let Some(mut rx) = self.manager.watch(&uid) {
            let snaps = snaps.clone();
            tokio::spawn(async move {
                loop {
                    let snap = rx.borrow_and_update().clone();
                    if snaps.send((id.clone(), snap)).is_err() {
                        return;
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    async fn resolve(
        &self,
        pod: &k8s::Pod,
        refs: &km_runtime::config_sources::Refs,
    ) -> Result<k8s::Pod, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut last = String::from("no --api-servers to read ConfigMaps and Secrets from");
        for client in &self.api {
            match km_kubelet::config::fetch(client, ns, refs).await {
                Ok(fetched) => {
                    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                    let dir = self.args.state_dir.join("volumes").join(uid);
                    let resolved = km_kubelet::config::resolve(pod, &fetched, &dir)
                        .map_err(|e| e.to_string())?;
                    km_kubelet::config::write_files(&resolved)
                        .map_err(|e| format!("writing volume files: {e}"))?;
                    return Ok(resolved.pod);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    fn snapshot(
        &mut self,
        task_id: &str,
        snap: PodSnapshot,
        stops: &mpsc::UnboundedSender<(String, Stopped)>,
    ) {
        let Some(t) = self.tasks.get_mut(task_id) else { return };
        if snap.removed || t.stopping {
            return;
        }
        self.statuses.write(t, &snap.status);
        let next = report::for_pod(snap.phase, snap.ready, &snap.status);
        if !report::worth_sending(t.last.as_ref(), &next) {
            return;
        }
        if next.state == State::Running && t.last.as_ref().is_none_or(|l| l.state < State::Running)
        {
            self.metrics.running(t.launched.elapsed());
        }
        if next.state == State::Failed {
            self.metrics.failure();
        }
        if next.state.is_terminal() && t.last.as_ref().is_some_and(|l| l.state == State::Running) {
            self.metrics.not_running();
        }
        let status = task_status(
            task_id,
            &self.agent_id,
            mesos_state(next.state),
            next.reason,
            &next.message,
            next.ready,
            status_data(t, &snap.status),
        );
        let terminal = next.state.is_terminal();
        t.last = Some(next);
        if terminal {
            t.stopping = true;
        }
        let uid = t.uid.clone();
        self.send(status);
        if terminal {
            // It ended by itself: remove its sandbox.
            let (manager, stops, id) = (self.manager.clone(), stops.clone(), task_id.to_owned());
            tokio::spawn(async move {
                let _ = manager.stop(&uid).await;
                let _ = stops.send((id, Stopped::Cleanup));
            });
        }
    }

    fn kill(
        &mut self,
        task_id: &str,
        grace: Option<Duration>,
        how: Stopped,
        stops: &mpsc::UnboundedSender<(String, Stopped)>,
    ) {
        let Some(t) = self.tasks.get_mut(task_id) else {
            self.send(task_status(
                task_id,
                &self.agent_id,
                v1::TaskState::TaskLost,
                None,
                "no such task on this executor",
                None,
                None,
            ));
            return;
        };
        if t.stopping {
            return;
        }
        t.stopping = true;
        let (manager, uid, stops, id) =
            (self.manager.clone(), t.uid.clone(), stops.clone(), task_id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = manager.stop_with_grace(&uid, grace).await {
                tracing::warn!(task = id, "stopping the pod: {e}");
            }
            let _ = stops.send((id, how));
        });
    }

    async fn stopped(&mut self, task_id: &str, how: Stopped) {
        let Some(t) = self.tasks.remove(task_id) else { return };
        if t.last.as_ref().is_some_and(|l| l.state == State::Running) {
            self.metrics.not_running();
        }
        let final_status = self.manager.snapshot(&t.uid).map(|s| s.status);
        let data = final_status.as_ref().and_then(|s| status_data(&t, s));
        match how {
            Stopped::Killed(message) => self.send(task_status(
                task_id,
                &self.agent_id,
                v1::TaskState::TaskKilled,
                None,
                &message,
                None,
                data,
            )),
            Stopped::Failed(message) => {
                self.metrics.failure();
                self.send(task_status(
                    task_id,
                    &self.agent_id,
                    v1::TaskState::TaskFailed,
                    Some("REASON_CONTAINER_LAUNCH_FAILED"),
                    &message,
                    None,
                    data,
                ));
            }
            Stopped::Cleanup => {}
        }
        if self.tasks.is_empty() {
            self.idle_since = Some(Instant::now());
        }
    }

    /// Deadlines; `Some(reason)` to shut down.
    fn tick(&mut self, stops: &mpsc::UnboundedSender<(String, Stopped)>) -> Option<String> {
        let grace = self.args.launch_grace_period;
        if !grace.is_zero() {
            let late: Vec<(String, String)> = self
                .tasks
                .iter()
                .filter(|(_, t)| {
                    !t.stopping
                        && t.launched.elapsed() >= grace
                        && t.last.as_ref().is_none_or(|l| l.state == State::Starting)
                })
                .map(|(id, t)| {
                    (
                        id.clone(),
                        t.last
                            .as_ref()
                            .map_or_else(|| "nothing started".to_owned(), |l| l.message.clone()),
                    )
                })
                .collect();
            for (id, why) in late {
                let message = format!("not running {}s after its launch: {why}", grace.as_secs());
                tracing::warn!(task = id, "{message}");
                self.kill(&id, None, Stopped::Failed(message), stops);
            }
        }
        if self.tasks.is_empty() {
            if self.kamikaze {
                return Some("kamikaze".to_owned());
            }
            let suicide = self.args.suicide_timeout;
            if !suicide.is_zero() && self.idle_since.is_some_and(|t| t.elapsed() >= suicide) {
                return Some(format!("no pod for {}s (--suicide-timeout)", suicide.as_secs()));
            }
        }
        None
    }

    fn static_with_status(&self) -> Vec<k8s::Pod> {
        self.statics
            .iter()
            .filter_map(|p| self.manager.pod_with_status(p.metadata.uid.as_deref()?))
            .collect()
    }

    /// Stops every pod (within the agent's shutdown grace period) and reports the tasks killed.
    async fn shutdown(&mut self, reason: &str) {
        let limit =
            self.shutdown_grace.saturating_sub(Duration::from_secs(1)).max(Duration::from_secs(1));
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        let stops = ids
            .iter()
            .filter_map(|id| self.tasks.get(id).map(|t| (id.clone(), t.uid.clone())))
            .map(|(id, uid)| {
                let manager = self.manager.clone();
                async move {
                    if let Err(e) = manager.stop_with_grace(&uid, Some(limit)).await {
                        tracing::warn!(task = id, "stopping the pod: {e}");
                    }
                    id
                }
            });
        let stopped = futures::future::join_all(stops).await;
        let updates = stopped.into_iter().map(|id| {
            let status = task_status(
                &id,
                &self.agent_id,
                v1::TaskState::TaskKilled,
                None,
                &format!("the executor shut down ({reason})"),
                None,
                None,
            );
            let exec = self.exec.clone();
            async move {
                if let Err(e) = exec.update(status).await {
                    tracing::warn!(task = id, "final update not delivered: {e}");
                }
            }
        });
        futures::future::join_all(updates).await;
        self.manager.stop_all().await;
        self.tasks.clear();
    }
}

fn privileged(pod: &k8s::Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.security_context.as_ref().and_then(|sc| sc.privileged) == Some(true))
    })
}

/// The bearer token in `path` (surrounding whitespace trimmed); an empty file is an error.
fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--proxy-token-file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(!token.is_empty(), "--proxy-token-file {} is empty", path.display());
    Ok(token.to_owned())
}
