//! The loop around the core: it turns Mesos events, pod and node watch events, the results of
//! its own writes and debug requests into core inputs, runs the core once per batch, and carries
//! out the effects — Mesos calls and API writes — without ever blocking on them.
//!
//! Ordering: DECLINE, REVIVE, SUPPRESS and RECONCILE go out one after another in the order the
//! core decided them (the reconciliation barrier relies on it); ACCEPTs, KILLs, acknowledgements
//! and API writes run concurrently, each kind within its own limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use km_mesos::scheduler::{self as mesos, Event as DriverEvent, MesosEvent};
use km_mesos::v1::{self, scheduler::event};
use km_scheduler_core::{
    Accept, Core, Effect, EventType, Input, Now, PodRef, TaskState, WriteResult,
};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::convert;
use crate::executor::Executors;
use crate::feed::Feeds;
use crate::fwid::Store;
use crate::http::{DebugCall, DebugReply, DebugRequest};
use crate::kubeapi::{self, Kube};
use crate::metrics::{Metrics, Snapshot};
use crate::settings::Settings;
use crate::static_pods;
use crate::workers::{ApiJob, Ctx, Lanes, MesosJob};

/// Normal events are queued only while fewer than this many events wait (warnings always are,
/// up to the backlog).
const NORMAL_EVENT_BACKLOG: usize = 256;
/// How often the loop publishes its numbers for `/metrics` at most.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// Events waiting to be written; more are dropped (events are best effort, as in Kubernetes).
const EVENT_BACKLOG: usize = 2048;
/// Concurrent event writes.
const EVENTS_IN_FLIGHT: usize = 8;
/// Inputs handled before the core plans (a burst becomes one plan).
const BATCH: usize = 4096;
/// How often the static pod directory is looked at.
const STATIC_POD_POLL: Duration = Duration::from_secs(5);

/// Mesos calls that must go out in the order decided.
#[derive(Debug)]
enum Ordered {
    Decline(Vec<String>, f64),
    Revive,
    Suppress,
    Reconcile(Vec<(String, Option<String>)>),
}

struct Timing {
    at: Instant,
    bound: bool,
    running: bool,
}

/// The loop's state.
pub(crate) struct Shell {
    settings: Settings,
    core: Core,
    lanes: Lanes,
    /// The nodes as the API has them.
    nodes: crate::feed::NodeFeed,
    executors: Executors,
    metrics: Arc<Metrics>,
    ordered: mpsc::UnboundedSender<Ordered>,
    events: mpsc::Sender<(PodRef, EventType, &'static str, String)>,
    published: Instant,
    unpublished: bool,
    origin: Instant,
    first_seen: HashMap<Arc<str>, Instant>,
    launched: HashMap<String, Timing>,
    agents: HashMap<String, String>,
    static_fingerprint: Option<u64>,
    framework_id: Option<String>,
    store: Arc<tokio::sync::Mutex<Store>>,
}

impl Shell {
    fn now(&self) -> Now {
        Now { mono: self.origin.elapsed(), wall: SystemTime::now() }
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        match &input {
            Input::PodApplied(p) => {
                let unbound = p
                    .spec
                    .as_ref()
                    .is_none_or(|s| s.node_name.as_deref().is_none_or(str::is_empty));
                if unbound
                    && let Some(uid) = p.metadata.uid.as_deref()
                    && !self.first_seen.contains_key(uid)
                {
                    self.first_seen.insert(uid.into(), Instant::now());
                }
            }
            Input::PodDeleted(p) => {
                if let Some(uid) = p.metadata.uid.as_deref() {
                    self.first_seen.remove(uid);
                }
            }
            Input::BindDone { task_id, result: WriteResult::Ok } => {
                if let Some(t) = self.launched.get_mut(task_id) {
                    t.bound = true;
                    self.metrics.bind_latency.observe(t.at.elapsed().as_secs_f64());
                    if t.running {
                        self.launched.remove(task_id);
                    }
                }
            }
            Input::PodResyncDone => tracing::debug!("the pods are listed"),
            Input::Update(u) => {
                if u.task_id.starts_with(km_scheduler_core::SENTINEL_PREFIX) {
                    tracing::debug!("reconciliation barrier answered");
                }
                if u.state == TaskState::Running {
                    if let Some(t) = self.launched.get_mut(&u.task_id)
                        && !t.running
                    {
                        t.running = true;
                        self.metrics.launch_latency.observe(t.at.elapsed().as_secs_f64());
                        if t.bound {
                            self.launched.remove(&u.task_id);
                        }
                    }
                } else if u.state.is_terminal() {
                    self.launched.remove(&u.task_id);
                }
            }
            _ => {}
        }
        self.core.handle(input, now);
    }

    fn mesos_event(&mut self, ev: DriverEvent) -> Option<String> {
        match ev {
            DriverEvent::Subscribed { framework_id, master, .. } => {
                tracing::info!(framework_id = %framework_id.value, %master, "subscribed");
                self.framework_id = Some(framework_id.value.clone());
                self.persist_framework_id(framework_id.value.clone());
                self.input(Input::Subscribed { framework_id: framework_id.value });
            }
            DriverEvent::Disconnected { reason, retry_in } => {
                tracing::warn!(%reason, ?retry_in, "lost the subscription");
                self.input(Input::Disconnected);
            }
            DriverEvent::Mesos(e) => return self.mesos(e),
        }
        None
    }

    fn mesos(&mut self, e: MesosEvent) -> Option<String> {
        match e.r#type() {
            event::Type::Offers => {
                let offers = e.offers.map(|o| o.offers).unwrap_or_default();
                tracing::debug!(offers = offers.len(), "offers");
                for o in &offers {
                    self.agents.insert(o.agent_id.value.clone(), o.hostname.clone());
                }
                let converted = offers.iter().map(convert::offer).collect();
                self.input(Input::Offers(converted));
            }
            event::Type::Rescind => {
                if let Some(r) = e.rescind {
                    self.input(Input::Rescinded(r.offer_id.value));
                }
            }
            event::Type::Update => {
                if let Some(u) = e.update {
                    self.input(Input::Update(convert::update(&u.status)));
                }
            }
            event::Type::Failure => {
                if let Some(f) = e.failure {
                    match (f.agent_id, f.executor_id) {
                        (Some(agent), Some(exec)) => {
                            tracing::info!(agent = %agent.value, executor = %exec.value, status = ?f.status, "executor exited");
                            if exec.value == self.executors.id() {
                                self.executors.forget(&agent.value);
                            }
                            self.input(Input::ExecutorExited {
                                agent_id: agent.value,
                                executor_id: exec.value,
                            });
                        }
                        (Some(agent), None) => {
                            tracing::warn!(agent = %agent.value, "agent lost");
                            self.executors.forget(&agent.value);
                            self.input(Input::AgentLost(agent.value));
                        }
                        _ => {}
                    }
                }
            }
            event::Type::Message => {
                if let Some(m) = e.message {
                    tracing::debug!(agent = %m.agent_id.value, executor = %m.executor_id.value, bytes = m.data.len(), "message from an executor");
                }
            }
            event::Type::Error => {
                let message = e.error.map(|x| x.message).unwrap_or_default();
                tracing::error!(%message, "the master ended the subscription");
                return Some(message);
            }
            other => tracing::debug!(event = ?other, "event ignored"),
        }
        None
    }

    fn persist_framework_id(&mut self, id: String) {
        let ttl = self.settings.framework.failover_timeout;
        if ttl.is_zero() {
            return;
        }
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let mut store = store.lock().await;
            match store.save(&id, ttl).await {
                Ok(()) => {
                    tracing::info!(framework_id = %id, "framework ID kept in {}", store.describe())
                }
                Err(e) => {
                    metrics.api_error("framework-id");
                    tracing::error!("cannot keep the framework ID ({}): {e}", store.describe());
                }
            }
        });
    }

    fn debug(&mut self, call: DebugCall) {
        let now = self.now();
        let reply = match call.request {
            DebugRequest::PodQueue => DebugReply::Text(self.core.podqueue_text(now)),
            DebugRequest::PodStore => DebugReply::Text(self.core.podstore_text()),
            DebugRequest::Tasks => DebugReply::Text(self.core.tasks_text()),
            DebugRequest::Ui => DebugReply::Json(self.ui_state(now)),
            _ if !self.core.subscribed() => DebugReply::NotSubscribed,
            DebugRequest::Explicit => {
                self.input(Input::RequestExplicit);
                DebugReply::Done
            }
            DebugRequest::Implicit => {
                self.input(Input::RequestImplicit);
                DebugReply::Done
            }
            DebugRequest::Kamikaze => {
                self.input(Input::Kamikaze);
                DebugReply::Done
            }
        };
        let _ = call.reply.send(reply);
    }

    /// The web page's state: the core's view and the offer counters.
    fn ui_state(&self, now: Now) -> serde_json::Value {
        let v = self.core.ui_view(now);
        let st = self.core.stats();
        serde_json::json!({
            "framework": self.settings.framework.name,
            "subscribed": self.core.subscribed(),
            "executor_id": v.executor_id,
            "pending": v.pending.iter().map(|(pod, why, failures)| serde_json::json!({ "pod": pod, "reason": why, "failures": failures })).collect::<Vec<_>>(),
            "placed": v.placed.iter().map(|(pod, host, ago)| serde_json::json!({ "pod": pod, "host": host, "seconds_ago": ago })).collect::<Vec<_>>(),
            "executors": v.executors.iter().map(|(host, ids)| serde_json::json!({ "host": host, "executor_ids": ids })).collect::<Vec<_>>(),
            "offers": { "received": st.offers_received, "used": st.offers_used, "declined": st.offers_declined, "rescinded": st.offers_rescinded },
            "pods_bound": st.pods_bound,
        })
    }

    /// Runs the core after a batch and carries out what it decided.
    fn run_core(&mut self) {
        let now = self.now();
        self.core.tick(now);
        self.core.plan(now);
        for e in self.core.take_effects() {
            self.effect(e);
        }
        if self.published.elapsed() < PUBLISH_EVERY {
            self.unpublished = true;
            return;
        }
        self.published = Instant::now();
        self.unpublished = false;
        self.metrics.publish(
            Snapshot {
                stats: self.core.stats().clone(),
                gauges: self.core.gauges(),
                subscribed: self.core.subscribed(),
                synced: self.core.synced(),
            },
            Instant::now(),
        );
    }

    fn effect(&mut self, e: Effect) {
        match e {
            Effect::Accept(a) => self.accept(a),
            Effect::Decline { offer_ids, refuse_seconds } => {
                let _ = self.ordered.send(Ordered::Decline(offer_ids, refuse_seconds));
            }
            Effect::Revive => {
                let _ = self.ordered.send(Ordered::Revive);
            }
            Effect::Suppress => {
                let _ = self.ordered.send(Ordered::Suppress);
            }
            Effect::Reconcile { tasks } => {
                let _ = self.ordered.send(Ordered::Reconcile(tasks));
            }
            Effect::Kill { task_id, agent_id, grace } => {
                self.lanes.mesos(MesosJob::Kill { task_id, agent_id, grace })
            }
            Effect::Acknowledge { task_id, agent_id, uuid } => {
                self.lanes.mesos(MesosJob::Ack { task_id, agent_id, uuid })
            }
            Effect::Message { agent_id, executor_id, data } => {
                self.lanes.mesos(MesosJob::Message { agent_id, executor_id, data })
            }
            Effect::Bind { pod, node, task_id, annotations } => {
                self.lanes.api(ApiJob::Bind { pod, node, task_id, annotations })
            }
            Effect::Unschedulable { pod, message } => {
                self.queue_event(
                    pod.clone(),
                    EventType::Warning,
                    "FailedScheduling",
                    message.clone(),
                );
                self.lanes.api(ApiJob::Unschedulable { pod, message });
            }
            Effect::Event { pod, kind, reason, message } => {
                self.queue_event(pod, kind, reason, message)
            }
            Effect::SetPhase { pod, change } => self.lanes.api(ApiJob::Phase { pod, change }),
            Effect::DeletePod { pod } => self.lanes.api(ApiJob::Delete { pod }),
            Effect::EnsureNode(spec) => {
                // A new term sees every agent afresh; nodes already registered as they would
                // be are left alone.
                if !self.nodes.is_current(&spec) {
                    self.lanes.api(ApiJob::Node(spec));
                }
            }
        }
    }

    fn queue_event(&mut self, pod: PodRef, kind: EventType, reason: &'static str, message: String) {
        let waiting = EVENT_BACKLOG - self.events.capacity();
        if kind == EventType::Normal && waiting >= NORMAL_EVENT_BACKLOG {
            self.metrics.events_dropped.inc();
            return;
        }
        if self.events.try_send((pod, kind, reason, message)).is_err() {
            self.metrics.events_dropped.inc();
        }
    }

    fn accept(&mut self, a: Accept) {
        tracing::debug!(agent = %a.hostname, offers = a.offer_ids.len(), tasks = a.tasks.len(), "accept");
        let (executor, new) = self.executors.for_accept(&a.agent_id, &a.executor);
        if new {
            self.lanes.api(ApiJob::RecordExecutor {
                node: a.hostname.clone(),
                executor_id: self.executors.id().to_owned(),
                resources: km_mesos::resources::encode_node_annotation(&executor.resources),
            });
        }
        let now = Instant::now();
        let mut task_ids = Vec::with_capacity(a.tasks.len());
        for t in &a.tasks {
            if let Some(seen) = self.first_seen.remove(&t.pod.uid) {
                self.metrics.queue_wait.observe(seen.elapsed().as_secs_f64());
            }
            self.launched
                .insert(t.task_id.clone(), Timing { at: now, bound: false, running: false });
            task_ids.push(t.task_id.clone());
        }
        let offer_ids =
            a.offer_ids.iter().map(|value| v1::OfferId { value: value.clone() }).collect();
        // The TaskInfos are built by the worker that sends the ACCEPT, so a burst of queued
        // ACCEPTs holds each pod's data once, not also as protobufs with a copy of the
        // ExecutorInfo per task.
        self.lanes.mesos(MesosJob::Accept {
            agent_id: a.agent_id,
            offer_ids,
            tasks: a.tasks,
            executor: Arc::new(executor),
            refuse_seconds: a.refuse_seconds,
            task_ids,
        });
    }

    fn check_static_pods(&mut self) {
        let Some(dir) = self.settings.static_pods.clone() else { return };
        let fingerprint = match static_pods::fingerprint(&dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("static pods: {e}");
                return;
            }
        };
        if self.static_fingerprint == Some(fingerprint) {
            return;
        }
        let matcher = match km_offer_matcher::Matcher::new(self.core.config().matcher.clone()) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("static pods: {e}");
                return;
            }
        };
        match static_pods::load(&dir, &matcher) {
            Ok(s) => {
                tracing::info!(dir = %dir.display(), pods = ?s.names, "static pods for new executors");
                self.static_fingerprint = Some(s.fingerprint);
                self.executors.set_static_pods(s.data, s.resources);
                if let Err(e) = self.core.set_executor_resources(self.executors.resources()) {
                    tracing::error!("static pods: {e}");
                }
            }
            Err(e) => {
                // Keep the last good set; say what is wrong once per change.
                self.static_fingerprint = Some(fingerprint);
                tracing::error!("static pods not changed: {e}");
            }
        }
    }
}

/// Carries out the ordered Mesos calls one after another.
async fn ordered_calls(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Ordered>) {
    while let Some(call) = rx.recv().await {
        let sched = ctx.sched.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let (what, result) = match call {
            Ordered::Decline(ids, refuse) => {
                let ids = ids.into_iter().map(|value| v1::OfferId { value }).collect();
                (
                    "decline",
                    sched.decline(ids, Some(v1::Filters { refuse_seconds: Some(refuse) })).await,
                )
            }
            Ordered::Revive => ("revive", sched.revive(Vec::new()).await),
            Ordered::Suppress => ("suppress", sched.suppress(Vec::new()).await),
            Ordered::Reconcile(tasks) => {
                let tasks = tasks
                    .into_iter()
                    .map(|(t, a)| (v1::TaskId { value: t }, a.map(|value| v1::AgentId { value })))
                    .collect();
                ("reconcile", sched.reconcile(tasks).await)
            }
        };
        if let Err(e) = result {
            ctx.metrics.mesos_error(what);
            tracing::warn!("{} failed: {e}", what.to_uppercase());
        }
    }
}

/// Writes queued events; like phases, they let queued bindings go first.
async fn event_writer(
    ctx: Arc<Ctx>,
    component: String,
    mut rx: mpsc::Receiver<(PodRef, EventType, &'static str, String)>,
    metrics: Arc<Metrics>,
) {
    let permits = Arc::new(Semaphore::new(EVENTS_IN_FLIGHT));
    while let Some((pod, kind, reason, message)) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        ctx.binds_quiet().await;
        let client = ctx.client.clone();
        let component = component.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = kubeapi::event(&client, &component, &pod, kind, reason, &message).await
            {
                metrics.api_error("event");
                tracing::debug!(%pod, "cannot record event {reason}: {e}");
            }
        });
    }
}

/// The framework to subscribe.
fn framework_info(s: &Settings, id: Option<String>) -> v1::FrameworkInfo {
    use v1::framework_info::{Capability, capability::Type};
    let others: Vec<&String> = s.framework.roles.iter().filter(|r| *r != "*").collect();
    let mut caps = vec![Type::PartitionAware, Type::TaskKillingState];
    let (role, roles) = if others.len() <= 1 {
        // One role (besides `*`): the pre-MULTI_ROLE form every Mesos since 1.0 takes; such a
        // framework is offered unreserved resources and those reserved for its role.
        (Some(others.first().map_or_else(|| "*".to_owned(), |r| (*r).clone())), Vec::new())
    } else {
        caps.push(Type::MultiRole);
        (None, s.framework.roles.clone())
    };
    #[allow(deprecated)]
    v1::FrameworkInfo {
        user: s.framework.user.clone(),
        name: s.framework.name.clone(),
        id: id.map(|value| v1::FrameworkId { value }),
        failover_timeout: Some(s.framework.failover_timeout.as_secs_f64()),
        checkpoint: Some(s.framework.checkpoint),
        role,
        roles,
        principal: s.framework.principal.clone(),
        webui_url: s.framework.webui_url.clone(),
        capabilities: caps.into_iter().map(|t| Capability { r#type: Some(t as i32) }).collect(),
        ..Default::default()
    }
}

fn driver(
    s: &Settings,
    id: Option<String>,
) -> Result<(mesos::Scheduler, mesos::Events), mesos::Error> {
    let mut config = mesos::Config::new(s.masters[0].clone(), framework_info(s, id));
    config.other_masters = s.masters[1..].to_vec();
    if let (Some(principal), Some(secret)) = (&s.framework.principal, &s.framework.secret) {
        config.credentials =
            Some(mesos::Credentials { principal: principal.clone(), secret: secret.clone() });
    }
    mesos::Scheduler::start(config)
}

/// How a term of leadership ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// SIGTERM or SIGINT.
    Stopped,
    /// SIGUSR1: hand the leadership to a standby.
    HandOver,
    /// The election was lost (the lease could not be renewed, or the key was taken).
    Lost(String),
}

/// The executor this scheduler launches (its ID included) and the core's configuration.
pub(crate) struct Plan {
    executors: Executors,
    core: km_scheduler_core::Config,
    static_fingerprint: Option<u64>,
}

impl Plan {
    /// Builds the executor configuration from the flags and the static pods directory.
    pub(crate) fn new(settings: &Settings) -> anyhow::Result<Plan> {
        use anyhow::Context;

        let mut executors = Executors::new(&settings.executor, &settings.advertised);
        let mut core = settings.core.clone();
        core.matcher.executor.id = executors.id().to_owned();
        let mut static_fingerprint = None;
        if let Some(dir) = &settings.static_pods {
            let matcher = km_offer_matcher::Matcher::new(core.matcher.clone())?;
            let s = static_pods::load(dir, &matcher).context("--static-pods-config")?;
            tracing::info!(dir = %dir.display(), pods = ?s.names, "static pods");
            static_fingerprint = Some(s.fingerprint);
            executors.set_static_pods(s.data, s.resources);
        }
        core.matcher.executor.resources = executors.resources();
        Ok(Plan { executors, core, static_fingerprint })
    }

    /// The executor ID.
    pub(crate) fn executor_id(&self) -> &str {
        self.executors.id()
    }
}

/// Runs the scheduler until SIGTERM or SIGINT, or (with `term`) until the leadership ends.
pub(crate) async fn run(
    settings: Settings,
    plan: Plan,
    kube: &Kube,
    feeds: &Feeds,
    mut term: Option<&mut crate::ha::Leadership>,
) -> anyhow::Result<Ended> {
    use anyhow::Context;

    let Plan { executors, core: core_cfg, static_fingerprint } = plan;
    tracing::info!(executor_id = %executors.id(), "executor configuration");
    let core = Core::new(core_cfg).context("scheduler configuration")?;

    let mut store = Store::open(&settings.etcd_servers, &settings.framework.name, &kube.write)
        .await
        .context("framework ID store")?;
    let framework_id = if settings.framework.failover_timeout.is_zero() {
        store.clear().await.context("clearing the stored framework ID (failover timeout 0)")?;
        None
    } else {
        let id = store.load().await.context("reading the stored framework ID")?;
        match &id {
            Some(id) => {
                tracing::info!(framework_id = %id, "re-subscribing as the stored framework ({})", store.describe())
            }
            None => tracing::info!("no stored framework ID: subscribing as a new framework"),
        }
        id
    };

    let metrics = Arc::new(Metrics::new());
    let (debug_tx, mut debug_rx) = mpsc::channel::<DebugCall>(64);
    let listener = crate::http::bind(settings.listen, settings.tuning.http_bind_interval).await;
    tracing::info!(addr = %settings.listen, "serving /healthz, /metrics and /debug");
    let router = crate::http::router(
        metrics.clone(),
        debug_tx,
        settings.tuning.http_handler_timeout,
        settings.kamikaze,
        executors.served().cloned(),
    );
    let http = tokio::spawn(async move { axum::serve(listener, router).await });

    // Pods and nodes.
    let mut pod_rx = feeds.pods.attach(settings.tuning.updates_backlog);
    let (results_tx, mut results_rx) = mpsc::unbounded_channel::<Input>();
    feeds.nodes.attach(results_tx.clone());

    let (sched, mut events) = driver(&settings, framework_id.clone())?;
    let lanes =
        Lanes::start(Arc::new(Ctx::new(sched, kube.write.clone(), results_tx, metrics.clone())));
    let (ordered_tx, ordered_rx) = mpsc::unbounded_channel();
    let ordered_task = tokio::spawn(ordered_calls(lanes.ctx().clone(), ordered_rx));
    let (event_tx, event_rx) = mpsc::channel(EVENT_BACKLOG);
    tokio::spawn(event_writer(
        lanes.ctx().clone(),
        settings.core.scheduler_name.clone(),
        event_rx,
        metrics.clone(),
    ));

    // The rolling executor upgrade: pods of older executors move to current ones.
    let (drain_tx, mut drain_rx) = mpsc::unbounded_channel();
    let drain = tokio::spawn(crate::drain::run(
        kube.write.clone(),
        executors.id().to_owned(),
        settings.core.scheduler_name.clone(),
        settings.drain.clone(),
        metrics.clone(),
        drain_tx,
    ));
    let mut shell = Shell {
        core,
        lanes,
        nodes: feeds.nodes.clone(),
        executors,
        metrics: metrics.clone(),
        ordered: ordered_tx,
        events: event_tx,
        published: Instant::now(),
        unpublished: true,
        origin: Instant::now(),
        first_seen: HashMap::new(),
        launched: HashMap::new(),
        agents: HashMap::new(),
        static_fingerprint,
        framework_id,
        store: Arc::new(tokio::sync::Mutex::new(store)),
        settings,
    };
    let mut refresh = tokio::time::interval(shell.settings.tuning.framework_id_refresh_interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut static_poll = tokio::time::interval(STATIC_POD_POLL);
    let mut stop = km_process::StopSignals::install()?;
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let mut mesos_error: Option<String> = None;
    let far = Duration::from_secs(3600);
    let ended = loop {
        let wake = shell
            .core
            .next_wakeup(shell.now())
            .map_or(far, |d| d.saturating_sub(shell.origin.elapsed()));
        // Numbers not yet published are, once the loop has been quiet for a moment.
        let wake = if shell.unpublished { wake.min(PUBLISH_EVERY) } else { wake };
        let lost = async {
            match term.as_deref_mut() {
                Some(t) => t.lost().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.recv() => break Ended::Stopped,
            reason = lost => break Ended::Lost(reason),
            _ = usr1.recv() => {
                if term.is_some() {
                    break Ended::HandOver;
                }
                tracing::warn!("SIGUSR1 hands the leadership to a standby, which needs --ha; carrying on");
            }
            ev = events.recv() => match ev {
                Some(ev) => if let Some(err) = shell.mesos_event(ev) { mesos_error = Some(err) },
                None => {
                    let reason = mesos_error.take().unwrap_or_else(|| "the driver stopped".to_owned());
                    if shell.framework_id.is_some() && reason.to_lowercase().contains("removed") {
                        tracing::warn!(%reason, "the stored framework is gone; subscribing as a new framework");
                        shell.framework_id = None;
                        if let Err(e) = shell.store.lock().await.clear().await {
                            tracing::warn!("cannot remove the stored framework ID: {e}");
                        }
                        shell.input(Input::Disconnected);
                        let (sched, ev) = driver(&shell.settings, None)?;
                        *shell.lanes.ctx().sched.write().unwrap_or_else(std::sync::PoisonError::into_inner) = sched;
                        events = ev;
                        continue;
                    }
                    anyhow::bail!("the Mesos master refused the framework: {reason}");
                }
            },
            Some(input) = results_rx.recv() => shell.input(input),
            Some(input) = pod_rx.recv() => shell.input(input),
            Some(call) = debug_rx.recv() => shell.debug(call),
            Some(call) = drain_rx.recv() => match call {
                crate::drain::DrainCall::Kamikaze { agent_id, executor_id } => {
                    shell.lanes.mesos(MesosJob::Message { agent_id, executor_id, data: b"kamikaze".to_vec() });
                }
            },
            _ = refresh.tick() => {
                let ttl = shell.settings.framework.failover_timeout;
                if let Some(id) = shell.framework_id.clone() && !ttl.is_zero() {
                    let store = shell.store.clone();
                    tokio::spawn(async move {
                        let mut store = store.lock().await;
                        if let Err(e) = store.refresh(&id, ttl).await {
                            tracing::warn!("cannot refresh the framework ID ({}): {e}", store.describe());
                        }
                    });
                }
            }
            _ = static_poll.tick() => shell.check_static_pods(),
            _ = tokio::time::sleep(wake) => {}
        }
        // Take what else is ready, so a burst is planned once.
        let mut taken = 0;
        while taken < BATCH {
            let next = pod_rx.try_recv().ok().or_else(|| results_rx.try_recv().ok());
            match next {
                Some(input) => shell.input(input),
                None => match events.try_recv() {
                    Some(ev) => {
                        if let Some(err) = shell.mesos_event(ev) {
                            mesos_error = Some(err);
                        }
                    }
                    None => break,
                },
            }
            taken += 1;
        }
        shell.run_core();
    };
    match &ended {
        Ended::Stopped => {
            tracing::info!("stopping; the framework stays registered until its failover timeout");
        }
        Ended::HandOver => tracing::info!("SIGUSR1: handing the leadership over"),
        Ended::Lost(reason) => tracing::warn!(%reason, "the leadership is lost; stepping down"),
    }
    http.abort();
    ordered_task.abort();
    drain.abort();
    Ok(ended)
}
