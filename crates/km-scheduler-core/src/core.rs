//! [`Core`]: the scheduler's state and every decision it takes.
//!
//! The shell feeds [`Input`]s with [`Core::handle`], calls [`Core::plan`] once it has drained
//! what is pending (so a burst of pods or offers becomes one matcher run), calls [`Core::tick`]
//! when [`Core::next_wakeup`] is due, and carries out [`Core::take_effects`].
//!
//! Rules, in the order a pod meets them:
//! - **Intake.** A pod is queued when it has no `spec.nodeName`, names this scheduler in
//!   `spec.schedulerName`, has not ended and is not being deleted. A bound pod carrying a km task
//!   annotation is tracked (its task is recovered after a restart); other pods are ignored.
//! - **Planning** waits for the first full pod listing and a live subscription. Candidates are
//!   queued pods whose back-off has passed, plus those in back-off when offers arrived since their
//!   last attempt (a fitting new offer breaks the back-off, whatever the pod's constraints). One
//!   matcher run places them; each agent used gets one ACCEPT with all its tasks.
//! - **Offers** not used are declined with `refuse_seconds` when nothing waits, and held up to
//!   the offer TTL while pods wait. Nothing waiting → SUPPRESS; a pod arriving after declines or
//!   a suppression → REVIVE.
//! - **Binding** happens on the task's first TASK_STARTING/TASK_RUNNING, so a launch that fails
//!   before the agent starts the task puts the pod back in the queue with back-off, never bound.
//! - **Failures** of a bound pod's task (lost, gone, unreachable, dropped, failed, killed) fail
//!   the pod with a reason, so that controllers replace it. The scheduler writes the pod phase
//!   itself only when the executor does not report the pod's status.
//! - **Deletion** kills the task with the pod's grace period and, once the task has ended,
//!   completes the deletion. A task whose pod is gone is killed.
//! - **Reconciliation**: explicit for every known task after each (re)subscription (once the
//!   pod listing is complete), retried with back-off until each task reported; implicit after a
//!   delay and then periodically. Tasks reported but unknown are adopted when their pod (found by
//!   the UID in the task ID) still waits, and killed when their pod is gone; nothing is killed
//!   before the first pod listing is complete.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use km_offer_matcher::{KnownAgent, Matcher, Offer, Outcome, PodDemand, PodKey, Resource};

use crate::backoff::{self, Rng};
use crate::config::{Config, LaunchPolicy};
use crate::model::{
    Accept, AcceptOutcome, Effect, EventType, ExecutorChoice, Input, LaunchTask, NodeInfo,
    NodeSpec, Now, PhaseChange, PodRef, Source, TaskState, TaskUpdate, WriteResult,
};
use crate::task;

/// How many ended task IDs are remembered (to tell a repeated terminal update from an unknown
/// task).
const FINISHED_MEMORY: usize = 4096;

/// Runtime classes the km executor can run.
pub const RUNTIME_CLASSES: &[&str] = &["native", "docker"];

/// A configuration the core refuses.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The matcher configuration is invalid.
    #[error("invalid placement configuration: {0}")]
    Matcher(#[from] km_offer_matcher::ConfigError),
    /// A duration that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// `refuse_seconds` out of range.
    #[error("refuse-seconds must be a finite number of seconds between 0 and 31536000, got {0}")]
    RefuseSeconds(f64),
}

/// Where a tracked pod is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// Queued for placement.
    Waiting {
        /// Not tried before this time (back-off)…
        ready_at: Duration,
        /// …unless offers arrived after the attempt made at this offer generation.
        tried_gen: Option<u64>,
        /// The last attempt found no offers at all: no back-off, the next offer is tried.
        starved: bool,
    },
    /// The spec cannot be turned into a task; waits for an update.
    Invalid,
    /// A task runs (or is being launched) for it.
    Task(Arc<str>),
    /// Nothing more to do.
    Done,
}

#[derive(Debug)]
struct PodEntry {
    uid: Arc<str>,
    key: PodKey,
    pod: Kept,
    demand: Result<PodDemand, String>,
    stage: Stage,
    /// Failed placement or launch attempts (drives the back-off).
    failures: u32,
    /// Last unschedulable message reported, and when.
    report: Option<(String, Duration)>,
    /// Seen during the current re-list.
    seen: bool,
}

impl PodEntry {
    fn pod_ref(&self) -> PodRef {
        PodRef {
            namespace: self.key.namespace.clone(),
            name: self.key.name.clone(),
            uid: self.uid.clone(),
        }
    }

    fn deleting(&self) -> bool {
        self.pod.deleting
    }
}

/// What the core keeps of a pod object. Ten thousand decoded `Pod`s would be most of the
/// scheduler's memory (about 5.5 KB each), so it keeps the pod's JSON until the pod is bound (its
/// task's data is made from it, again if a launch fails) and then only the facts still needed.
#[derive(Debug)]
struct Kept {
    /// The pod as v1 JSON, until it is bound.
    json: Option<Box<[u8]>>,
    /// Fingerprint of the spec, labels and annotations while unbound (an edit of a waiting pod is
    /// planned anew); 0 once bound.
    shape: u64,
    /// It has a deletion timestamp.
    deleting: bool,
    /// `spec.terminationGracePeriodSeconds`.
    grace: Option<i64>,
    /// `metadata.deletionGracePeriodSeconds`.
    deletion_grace: Option<i64>,
}

impl Kept {
    /// Keeps `pod`, with its JSON when `unbound`.
    fn of(pod: &Pod, unbound: bool) -> Kept {
        Kept {
            json: if unbound {
                serde_json::to_vec(pod).ok().map(Vec::into_boxed_slice)
            } else {
                None
            },
            shape: if unbound { shape_of(pod) } else { 0 },
            deleting: pod.metadata.deletion_timestamp.is_some(),
            grace: pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds),
            deletion_grace: pod.metadata.deletion_grace_period_seconds,
        }
    }

    /// The pod's kill grace period (`terminationGracePeriodSeconds`, else `default`).
    fn grace(&self, default: Duration) -> Duration {
        self.grace.and_then(|s| u64::try_from(s).ok()).map_or(default, Duration::from_secs)
    }

    /// The grace period of its deletion: `deletionGracePeriodSeconds`, else its kill grace.
    fn deletion_grace(&self, default: Duration) -> Duration {
        self.deletion_grace
            .and_then(|s| u64::try_from(s).ok())
            .map_or_else(|| self.grace(default), Duration::from_secs)
    }
}

/// A fingerprint of what placement depends on: the spec, labels and annotations.
fn shape_of(pod: &Pod) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let parts = (&pod.spec, &pod.metadata.labels, &pod.metadata.annotations);
    match serde_json::to_vec(&parts) {
        Ok(bytes) => bytes.hash(&mut h),
        Err(_) => format!("{parts:?}").hash(&mut h),
    }
    h.finish()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BindState {
    /// Not bound yet.
    No,
    /// A Binding is being written.
    InFlight,
    /// Bound (by this or an earlier incarnation).
    Done,
    /// The API refused the binding.
    Refused,
}

#[derive(Debug)]
struct TaskEntry {
    id: Arc<str>,
    pod: PodRef,
    agent_id: Arc<str>,
    hostname: Arc<str>,
    /// Last state reported; `None` until the first update.
    state: Option<TaskState>,
    last_update_at: Duration,
    bind: BindState,
    annotations: Vec<(String, String)>,
    /// Kill sent: grace and when.
    kill: Option<(Duration, Duration)>,
    /// The pod object is gone.
    pod_gone: bool,
    executor_reports_status: bool,
    running_written: bool,
    /// A terminal update that arrived while the binding was in flight.
    ended: Option<TaskUpdate>,
}

#[derive(Debug)]
struct HeldOffer {
    offer: Offer,
    expires: Duration,
}

/// IDs of offers that are gone, remembered for a while so that one is never used twice.
#[derive(Debug, Default)]
struct OfferHistory {
    order: VecDeque<(Duration, String)>,
    ids: HashSet<String>,
}

impl OfferHistory {
    fn remember(&mut self, id: String, until: Duration) {
        if self.ids.insert(id.clone()) {
            self.order.push_back((until, id));
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn prune(&mut self, now: Duration) {
        while self.order.front().is_some_and(|(until, _)| *until <= now) {
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }
}

#[derive(Debug, Default)]
struct AgentEntry {
    hostname: String,
    attributes: Vec<km_offer_matcher::Attribute>,
    capacity: Vec<Resource>,
    /// Executors of this framework seen in the agent's latest offer.
    executor_ids: Vec<String>,
    /// Resources the current executor runs with, when this scheduler (or the Node) knows.
    executor_resources: Option<Vec<Resource>>,
    node_sent: bool,
}

#[derive(Debug)]
struct ExplicitRun {
    started: Duration,
    pending: BTreeSet<Arc<str>>,
    next_retry: Duration,
    backoff: Duration,
}

/// Before the first plan of a core, every task the master knows must have been reported, or a
/// pod launched by an earlier incarnation (and not bound yet) could be launched again. An
/// implicit reconciliation followed by an explicit one for a task that cannot exist works as a
/// barrier: the master answers calls in order on one event stream, so the answer about the
/// sentinel comes after every answer of the implicit run.
#[derive(Debug, Default)]
enum Barrier {
    #[default]
    Needed,
    Pending {
        sentinel: String,
        retry_at: Duration,
        backoff: Duration,
    },
    Passed,
}

/// Prefix of barrier sentinel task IDs (never a real task).
pub const SENTINEL_PREFIX: &str = "km-reconciliation-barrier-";

/// Cap of the barrier's retry interval.
const BARRIER_MAX_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Reconciliation {
    barrier: Barrier,
    explicit_wanted: bool,
    explicit_now: bool,
    running: Option<ExplicitRun>,
    implicit_at: Option<Duration>,
    implicit_wanted: bool,
    last_run: Option<Duration>,
}

/// Counters for metrics.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Offers received.
    pub offers_received: u64,
    /// Offers declined.
    pub offers_declined: u64,
    /// Offers consumed by ACCEPTs.
    pub offers_used: u64,
    /// Offers rescinded by the master.
    pub offers_rescinded: u64,
    /// Tasks launched.
    pub tasks_launched: u64,
    /// Pods bound.
    pub pods_bound: u64,
    /// Launches that failed before the pod was bound.
    pub launch_failures: u64,
    /// Pods failed because their task ended abnormally.
    pub pods_failed: u64,
    /// Status updates received, by state.
    pub updates: BTreeMap<&'static str, u64>,
    /// Kills sent.
    pub kills: u64,
    /// Explicit reconciliation requests sent.
    pub explicit_reconciliations: u64,
    /// Implicit reconciliation requests sent.
    pub implicit_reconciliations: u64,
    /// Matcher runs.
    pub plans: u64,
}

/// A snapshot of gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Pods waiting for placement.
    pub queued: usize,
    /// Pods whose spec cannot be scheduled.
    pub invalid: usize,
    /// Tasks known and not ended.
    pub tasks: usize,
    /// Offers held.
    pub offers: usize,
    /// Pods tracked.
    pub pods: usize,
}

/// The scheduler's decision core.
#[derive(Debug)]
pub struct Core {
    cfg: Config,
    matcher: Matcher,
    rng: Rng,
    subscribed: bool,
    synced: bool,
    resyncing: bool,
    dirty: bool,
    pods: BTreeMap<Arc<str>, PodEntry>,
    /// Pods in `Stage::Waiting`.
    waiting: BTreeSet<Arc<str>>,
    /// The same pods by the end of their back-off.
    ready: BTreeSet<(Duration, Arc<str>)>,
    /// Pods in `Stage::Invalid`.
    invalid: BTreeSet<Arc<str>>,
    tasks: BTreeMap<Arc<str>, TaskEntry>,
    /// Adopted tasks whose agent's hostname is not known yet (their binding waits for it).
    hostless: BTreeSet<Arc<str>>,
    /// Tasks a kill was sent for.
    killing: BTreeSet<Arc<str>>,
    /// Tasks without any status update yet, by when they were launched (or last asked about).
    unreported: BTreeSet<(Duration, Arc<str>)>,
    finished: VecDeque<Arc<str>>,
    finished_set: HashSet<Arc<str>>,
    offers: BTreeMap<String, HeldOffer>,
    offer_history: OfferHistory,
    offer_gen: u64,
    last_breakout: Option<Duration>,
    /// Offers arrived since pods in back-off were last tried.
    breakout_due: bool,
    agents: BTreeMap<String, AgentEntry>,
    nodes: BTreeMap<String, NodeInfo>,
    suppressed: bool,
    revive_needed: bool,
    recon: Reconciliation,
    effects: Vec<Effect>,
    stats: Stats,
    /// The latest bindings (when, pod, host), newest last, for the web page.
    placements: VecDeque<(Duration, PodRef, Arc<str>)>,
}

/// How many recent bindings the web page is shown.
const PLACEMENTS_KEPT: usize = 200;

/// What the scheduler's web page shows: pods waiting with the matcher's reason, the latest
/// placements, and the executors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UiView {
    /// Pods waiting for a place: (namespace/name, why, failed attempts).
    pub pending: Vec<(String, String, u32)>,
    /// The latest bindings, newest first: (namespace/name, host, seconds ago).
    pub placed: Vec<(String, String, f64)>,
    /// This scheduler's executor ID.
    pub executor_id: String,
    /// The executors seen on each agent: (host, executor IDs).
    pub executors: Vec<(String, Vec<String>)>,
}

impl Core {
    /// A core with a validated configuration.
    pub fn new(cfg: Config) -> Result<Core, CoreError> {
        let matcher = Matcher::new(cfg.matcher.clone())?;
        if cfg.offer_ttl.is_zero() {
            return Err(CoreError::Zero("offer-ttl"));
        }
        if cfg.initial_backoff.is_zero() {
            return Err(CoreError::Zero("initial-pod-backoff"));
        }
        if cfg.max_backoff < cfg.initial_backoff {
            return Err(CoreError::Zero("max-pod-backoff (at least initial-pod-backoff)"));
        }
        if !(cfg.refuse_seconds.is_finite() && (0.0..=31_536_000.0).contains(&cfg.refuse_seconds)) {
            return Err(CoreError::RefuseSeconds(cfg.refuse_seconds));
        }
        let rng = Rng::new(cfg.seed);
        Ok(Core {
            cfg,
            matcher,
            rng,
            subscribed: false,
            synced: false,
            resyncing: false,
            dirty: false,
            pods: BTreeMap::new(),
            waiting: BTreeSet::new(),
            ready: BTreeSet::new(),
            invalid: BTreeSet::new(),
            tasks: BTreeMap::new(),
            hostless: BTreeSet::new(),
            killing: BTreeSet::new(),
            unreported: BTreeSet::new(),
            finished: VecDeque::new(),
            finished_set: HashSet::new(),
            offers: BTreeMap::new(),
            offer_history: OfferHistory::default(),
            placements: VecDeque::new(),
            offer_gen: 0,
            last_breakout: None,
            breakout_due: false,
            agents: BTreeMap::new(),
            nodes: BTreeMap::new(),
            suppressed: false,
            revive_needed: false,
            recon: Reconciliation::default(),
            effects: Vec::new(),
            stats: Stats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Effects decided so far, in order; the buffer is emptied.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Gauges.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            queued: self.waiting.len(),
            invalid: self.invalid.len(),
            tasks: self.tasks.len(),
            offers: self.offers.len(),
            pods: self.pods.len(),
        }
    }

    /// Whether the first full pod listing has been seen.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Whether a subscription is live.
    pub fn subscribed(&self) -> bool {
        self.subscribed
    }

    fn emit(&mut self, e: Effect) {
        self.effects.push(e);
    }

    // === inputs ===

    /// Applies one input.
    pub fn handle(&mut self, input: Input, now: Now) {
        match input {
            Input::Subscribed { framework_id: _ } => self.on_subscribed(now),
            Input::Disconnected => self.on_disconnected(),
            Input::Offers(offers) => self.on_offers(offers, now),
            Input::Rescinded(id) => {
                if self.offers.remove(&id).is_some() {
                    self.stats.offers_rescinded += 1;
                }
            }
            Input::AgentLost(agent_id) => {
                self.offers.retain(|_, o| o.offer.agent_id != agent_id);
                if let Some(a) = self.agents.get_mut(&agent_id) {
                    a.executor_ids.clear();
                    a.executor_resources = None;
                }
            }
            Input::ExecutorExited { agent_id, executor_id } => {
                if let Some(a) = self.agents.get_mut(&agent_id) {
                    a.executor_ids.retain(|e| *e != executor_id);
                    if executor_id == self.cfg.matcher.executor.id {
                        a.executor_resources = None;
                    }
                }
            }
            Input::Update(u) => self.on_update(u, now),
            Input::PodApplied(pod) => self.on_pod_applied(pod, now),
            Input::PodDeleted(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    self.forget_pod(uid, Some(&pod), now);
                }
            }
            Input::PodResyncStarted => {
                self.resyncing = true;
                for p in self.pods.values_mut() {
                    p.seen = false;
                }
            }
            Input::PodResyncDone => self.on_resync_done(now),
            Input::NodeKnown(info) => self.on_node(info),
            Input::AcceptDone { agent_id, task_ids, outcome } => {
                self.on_accept_done(&agent_id, task_ids, outcome, now)
            }
            Input::BindDone { task_id, result } => self.on_bind_done(&task_id, result, now),
            Input::RequestExplicit => {
                self.recon.explicit_wanted = true;
                self.recon.running = None;
            }
            Input::RequestImplicit => self.recon.implicit_wanted = true,
            Input::Kamikaze => self.kamikaze(),
        }
    }

    fn on_subscribed(&mut self, now: Now) {
        self.subscribed = true;
        // A fresh subscription is neither suppressed nor filtered.
        self.suppressed = false;
        self.revive_needed = false;
        self.recon.explicit_wanted = true;
        self.recon.explicit_now = true;
        self.recon.running = None;
        self.recon.implicit_at = Some(now.mono + self.cfg.initial_implicit_delay);
        self.dirty = true;
    }

    fn on_disconnected(&mut self) {
        self.subscribed = false;
        // Offers of a lost subscription are void; the master rescinds them.
        self.offers.clear();
        self.recon.running = None;
    }

    fn on_offers(&mut self, mut offers: Vec<Offer>, now: Now) {
        // An offer ID seen before (held, used, declined, rescinded) is never taken again.
        let remember_until = now.mono + self.cfg.offer_ttl + self.cfg.offer_linger;
        self.offer_history.prune(now.mono);
        offers.retain(|o| {
            let fresh = !self.offer_history.contains(&o.id);
            if fresh {
                self.offer_history.remember(o.id.clone(), remember_until);
            }
            fresh
        });
        if offers.is_empty() {
            return;
        }
        self.offer_gen += 1;
        if self.in_backoff(now).next().is_some() {
            self.breakout_due = true;
        }
        self.stats.offers_received += offers.len() as u64;
        let exec_id = self.cfg.matcher.executor.id.clone();
        // Merge the offers of one agent to judge its capacity.
        let mut per_agent: BTreeMap<String, Vec<&Offer>> = BTreeMap::new();
        for o in &offers {
            per_agent.entry(o.agent_id.clone()).or_default().push(o);
        }
        for (agent_id, os) in per_agent {
            let first = os[0];
            let agent = self.agents.entry(agent_id.clone()).or_default();
            let attributes_changed =
                agent.hostname != first.hostname || agent.attributes != first.attributes;
            agent.hostname.clone_from(&first.hostname);
            agent.attributes.clone_from(&first.attributes);
            agent.executor_ids = os.iter().flat_map(|o| o.executor_ids.iter().cloned()).collect();
            agent.executor_ids.sort();
            agent.executor_ids.dedup();
            if !agent.executor_ids.contains(&exec_id) {
                agent.executor_resources = None;
            }
            let offered: Vec<Resource> =
                os.iter().flat_map(|o| o.resources.iter().cloned()).collect();
            let grew = total_cpus_mem(&offered) > total_cpus_mem(&agent.capacity);
            if grew {
                agent.capacity = offered;
            }
            if !agent.node_sent || attributes_changed || grew {
                agent.node_sent = true;
                let spec = NodeSpec {
                    name: agent.hostname.clone(),
                    agent_id: agent_id.clone(),
                    labels: km_offer_matcher::offer::agent_labels(
                        &agent.hostname,
                        &agent.attributes,
                    ),
                    capacity: agent.capacity.clone(),
                };
                self.effects.push(Effect::EnsureNode(spec));
            }
        }
        for o in offers {
            let expires = now.mono + self.cfg.offer_ttl;
            self.offers.insert(o.id.clone(), HeldOffer { offer: o, expires });
        }
        self.dirty = true;
        self.resolve_hostless();
    }

    fn on_node(&mut self, info: NodeInfo) {
        if let (Some(agent_id), Some(exec), Some(res)) =
            (&info.agent_id, &info.executor_id, &info.executor_resources)
            && *exec == self.cfg.matcher.executor.id
        {
            let agent = self.agents.entry(agent_id.clone()).or_default();
            if agent.hostname.is_empty() {
                agent.hostname.clone_from(&info.name);
            }
            if agent.executor_resources.is_none() {
                agent.executor_resources = Some(res.clone());
            }
        }
        self.nodes.insert(info.name.clone(), info);
        self.resolve_hostless();
    }

    // === pods ===

    fn on_pod_applied(&mut self, pod: Arc<Pod>, now: Now) {
        let Some(uid) = pod.metadata.uid.clone().filter(|u| !u.is_empty()) else { return };
        let class = self.classify(&pod);
        let uid: Arc<str> = match self.pods.get_key_value(uid.as_str()) {
            Some((k, _)) => k.clone(),
            None => uid.into(),
        };
        if let Some(e) = self.pods.get_mut(&uid) {
            e.seen = true;
        }
        match class {
            Class::Ignore => {
                let drop_it = match self.pods.get_mut(&uid) {
                    Some(e) => {
                        e.pod = Kept::of(&pod, false);
                        matches!(e.stage, Stage::Waiting { .. } | Stage::Invalid | Stage::Done)
                    }
                    None => false,
                };
                if drop_it {
                    self.remove_pod(&uid);
                }
            }
            Class::Candidate => self.apply_candidate(uid, pod, now),
            Class::Bound { task_id, agent_id } => {
                self.apply_bound(uid, pod, task_id, agent_id, now)
            }
        }
    }

    fn classify(&self, pod: &Pod) -> Class {
        let meta = &pod.metadata;
        let annotations = meta.annotations.as_ref();
        if annotations.is_some_and(|a| a.contains_key(task::MIRROR_POD)) {
            return Class::Ignore;
        }
        let spec = pod.spec.as_ref();
        let node = spec.and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty());
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let ended = matches!(phase, Some("Succeeded" | "Failed"));
        if node.is_some() {
            let task_id = annotations.and_then(|a| a.get(task::TASK_ID)).filter(|t| !t.is_empty());
            return match task_id {
                Some(t) if !ended => Class::Bound {
                    task_id: t.clone(),
                    agent_id: annotations.and_then(|a| a.get(task::SLAVE_ID)).cloned(),
                },
                _ => Class::Ignore,
            };
        }
        let scheduler =
            spec.and_then(|s| s.scheduler_name.as_deref()).unwrap_or("default-scheduler");
        if scheduler != self.cfg.scheduler_name || ended {
            return Class::Ignore;
        }
        Class::Candidate
    }

    fn apply_candidate(&mut self, uid: Arc<str>, pod: Arc<Pod>, now: Now) {
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let Some(entry) = self.pods.get_mut(&uid) else {
            if deleting {
                return;
            }
            let demand = self.demand_of(&pod);
            let key = pod_key(&pod);
            let invalid = demand.as_ref().err().cloned();
            let entry = PodEntry {
                uid: uid.clone(),
                key,
                pod: Kept::of(&pod, true),
                demand,
                stage: Stage::Done,
                failures: 0,
                report: None,
                seen: true,
            };
            self.pods.insert(uid.clone(), entry);
            match invalid {
                None => {
                    self.set_stage(
                        &uid,
                        Stage::Waiting { ready_at: now.mono, tried_gen: None, starved: false },
                    );
                    self.enqueue(&uid);
                }
                Some(msg) => {
                    self.set_stage(&uid, Stage::Invalid);
                    self.report_invalid(&uid, msg, now);
                }
            }
            return;
        };
        // An unbound pod keeps its JSON even with a task: a launch that fails requeues it.
        let kept = Kept::of(&pod, true);
        let spec_changed = kept.shape != entry.pod.shape;
        entry.pod = kept;
        match entry.stage.clone() {
            Stage::Waiting { .. } | Stage::Invalid if deleting => self.remove_pod(&uid),
            Stage::Waiting { .. } | Stage::Invalid if spec_changed => {
                let demand = self.demand_of(&pod);
                let entry = self.pods.get_mut(&uid).expect("present");
                let was_invalid = entry.stage == Stage::Invalid;
                entry.failures = 0;
                match &demand {
                    Ok(_) => {
                        entry.demand = demand;
                        self.set_stage(
                            &uid,
                            Stage::Waiting { ready_at: now.mono, tried_gen: None, starved: false },
                        );
                        if was_invalid {
                            self.enqueue(&uid);
                        }
                        self.dirty = true;
                    }
                    Err(msg) => {
                        let msg = msg.clone();
                        entry.demand = demand;
                        self.set_stage(&uid, Stage::Invalid);
                        self.report_invalid(&uid, msg, now);
                    }
                }
            }
            Stage::Task(id) if deleting => self.kill_for_deletion(&id, now),
            _ => {}
        }
    }

    fn apply_bound(
        &mut self,
        uid: Arc<str>,
        pod: Arc<Pod>,
        task_id: String,
        agent_id: Option<String>,
        now: Now,
    ) {
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let hostname: Arc<str> =
            pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default().into();
        let task_id: Arc<str> = match self.tasks.get_key_value(task_id.as_str()) {
            Some((k, _)) => k.clone(),
            None => task_id.into(),
        };
        if let Some(entry) = self.pods.get_mut(&uid) {
            entry.pod = Kept::of(&pod, false);
            if entry.stage == Stage::Task(task_id.clone()) {
                if let Some(t) = self.tasks.get_mut(&task_id)
                    && t.bind != BindState::Done
                {
                    // Our own binding, seen through the watch.
                    t.bind = BindState::Done;
                }
                if deleting {
                    self.kill_for_deletion(&task_id, now);
                }
                return;
            }
        }
        if self.finished_set.contains(&task_id) {
            // The task already ended; nothing runs for this pod.
            self.set_stage(&uid, Stage::Done);
            return;
        }
        // A task launched by an earlier incarnation (or another scheduler instance): recover it.
        let key = pod_key(&pod);
        let entry = self.pods.entry(uid.clone()).or_insert_with(|| PodEntry {
            uid: uid.clone(),
            key: key.clone(),
            pod: Kept::of(&pod, false),
            demand: Err("recovered".into()),
            stage: Stage::Done,
            failures: 0,
            report: None,
            seen: true,
        });
        let pod_ref = entry.pod_ref();
        self.set_stage(&uid, Stage::Task(task_id.clone()));
        let annotations = Vec::new();
        if !self.tasks.contains_key(&task_id) {
            self.unreported.insert((now.mono, task_id.clone()));
        }
        self.tasks.entry(task_id.clone()).or_insert_with(|| TaskEntry {
            id: task_id.clone(),
            pod: pod_ref,
            agent_id: agent_id.unwrap_or_default().into(),
            hostname,
            state: None,
            last_update_at: now.mono,
            bind: BindState::Done,
            annotations,
            kill: None,
            pod_gone: false,
            executor_reports_status: false,
            running_written: true,
            ended: None,
        });
        if deleting {
            self.kill_for_deletion(&task_id, now);
        }
    }

    fn on_resync_done(&mut self, now: Now) {
        if self.resyncing {
            let gone: Vec<Arc<str>> =
                self.pods.values().filter(|p| !p.seen).map(|p| p.uid.clone()).collect();
            for uid in gone {
                self.forget_pod(&uid, None, now);
            }
        }
        self.resyncing = false;
        if !self.synced {
            self.synced = true;
            self.dirty = true;
        }
    }

    /// The pod object is gone.
    fn forget_pod(&mut self, uid: &str, last: Option<&Pod>, now: Now) {
        let Some(entry) = self.pods.get(uid) else { return };
        if let Stage::Task(id) = entry.stage.clone() {
            let grace = last.map_or(self.cfg.default_grace, |p| {
                task::deletion_grace_of(p, self.cfg.default_grace)
            });
            if let Some(t) = self.tasks.get_mut(&id) {
                t.pod_gone = true;
            }
            self.kill(&id, grace, now);
        }
        self.remove_pod(uid);
    }

    fn remove_pod(&mut self, uid: &str) {
        let Some((key, _)) = self.pods.get_key_value(uid) else { return };
        let key = key.clone();
        self.set_stage(&key, Stage::Done);
        self.pods.remove(uid);
    }

    /// Moves a pod to `stage`, keeping the waiting, ready and invalid indexes in step.
    fn set_stage(&mut self, uid: &Arc<str>, stage: Stage) {
        let Some(e) = self.pods.get_mut(uid) else { return };
        match &e.stage {
            Stage::Waiting { ready_at, .. } => {
                self.ready.remove(&(*ready_at, uid.clone()));
                self.waiting.remove(uid);
            }
            Stage::Invalid => {
                self.invalid.remove(uid);
            }
            _ => {}
        }
        match &stage {
            Stage::Waiting { ready_at, .. } => {
                self.ready.insert((*ready_at, uid.clone()));
                self.waiting.insert(uid.clone());
            }
            Stage::Invalid => {
                self.invalid.insert(uid.clone());
            }
            _ => {}
        }
        e.stage = stage;
    }

    /// Removes a task and its index entries.
    fn remove_task(&mut self, id: &str) -> Option<TaskEntry> {
        let t = self.tasks.remove(id)?;
        self.killing.remove(&t.id);
        self.hostless.remove(&t.id);
        if t.state.is_none() {
            self.unreported.remove(&(t.last_update_at, t.id.clone()));
        }
        Some(t)
    }

    fn demand_of(&self, pod: &Pod) -> Result<PodDemand, String> {
        if let Some(rc) = pod.spec.as_ref().and_then(|s| s.runtime_class_name.as_deref())
            && !RUNTIME_CLASSES.contains(&rc)
        {
            return Err(format!(
                "unknown runtime class {rc:?}: km runs pods with the {} runtimes",
                RUNTIME_CLASSES.join(" and ")
            ));
        }
        self.matcher.demand(pod).map_err(|e| e.to_string())
    }

    /// A pod starts waiting: plan soon, and revive offers if they were declined or suppressed.
    fn enqueue(&mut self, uid: &Arc<str>) {
        debug_assert!(self.waiting.contains(uid));
        self.dirty = true;
        if self.revive_needed || self.suppressed {
            self.revive_needed = false;
            self.suppressed = false;
            if self.subscribed {
                self.emit(Effect::Revive);
            }
        }
    }

    fn requeue_after_failure(&mut self, uid: &Arc<str>, now: Now) -> Duration {
        let initial = self.cfg.initial_backoff;
        let max = self.cfg.max_backoff;
        let Some(entry) = self.pods.get_mut(uid) else { return Duration::ZERO };
        entry.failures = entry.failures.saturating_add(1);
        let delay = backoff::jittered(initial, max, entry.failures, &mut self.rng);
        let stage = Stage::Waiting {
            ready_at: now.mono + delay,
            tried_gen: Some(self.offer_gen),
            starved: false,
        };
        self.set_stage(uid, stage);
        self.enqueue(uid);
        delay
    }

    fn report_invalid(&mut self, uid: &Arc<str>, msg: String, now: Now) {
        let Some(entry) = self.pods.get_mut(uid) else { return };
        let message = format!("invalid pod spec: {msg}");
        if entry.report.as_ref().is_some_and(|(m, _)| *m == message) {
            return;
        }
        entry.report = Some((message.clone(), now.mono));
        let pod = entry.pod_ref();
        self.emit(Effect::Unschedulable { pod, message });
    }

    // === planning ===

    /// Runs the matcher if anything changed since the last run: places what fits, reports what
    /// does not, declines or holds the offers left over.
    pub fn plan(&mut self, now: Now) {
        self.expire_offers(now);
        if !self.dirty
            || !self.subscribed
            || !self.synced
            || !matches!(self.recon.barrier, Barrier::Passed)
        {
            return;
        }
        self.dirty = false;
        while self.plan_round(now) && self.cfg.launch_policy == LaunchPolicy::OnePodPerOffer {
            // The baseline launches one pod per offer: go round again with the offers left.
        }
    }

    /// One matcher run over the candidates; whether it launched anything.
    fn plan_round(&mut self, now: Now) -> bool {
        let breakout_allowed = self.breakout_allowed(now);
        let candidates: Vec<Arc<str>> = self
            .waiting
            .iter()
            .filter(|uid| match self.pods.get(*uid).map(|p| &p.stage) {
                Some(Stage::Waiting { ready_at, tried_gen, starved }) => {
                    let newer_offers = tried_gen.is_some_and(|g| g < self.offer_gen);
                    if *starved {
                        newer_offers
                    } else {
                        *ready_at <= now.mono
                            || tried_gen.is_none()
                            || (newer_offers && breakout_allowed)
                    }
                }
                _ => false,
            })
            .cloned()
            .collect();
        // A round without offers tries nothing in back-off: the breakout waits for offers.
        if breakout_allowed && self.breakout_due && !self.offers.is_empty() {
            // Every pod in back-off is in this round.
            if self.in_backoff(now).next().is_some() {
                self.last_breakout = Some(now.mono);
            }
            self.breakout_due = false;
        }
        if candidates.is_empty() {
            self.settle_offers();
            return false;
        }
        if self.offers.is_empty() && self.agents.is_empty() {
            // No agent has ever offered anything: nothing to place on and nothing to explain.
            return false;
        }
        let demands: Vec<&PodDemand> = candidates
            .iter()
            .filter_map(|uid| self.pods.get(uid).and_then(|p| p.demand.as_ref().ok()))
            .collect();
        if demands.len() != candidates.len() {
            // Only valid pods wait; a mismatch would be a bug in the book-keeping.
            return false;
        }
        let offers: Vec<Offer> = self.offers.values().map(|h| h.offer.clone()).collect();
        let known: Vec<KnownAgent> = self
            .agents
            .iter()
            .map(|(id, a)| KnownAgent {
                agent_id: id.clone(),
                hostname: a.hostname.clone(),
                attributes: a.attributes.clone(),
                capacity: a.capacity.clone(),
                executor_ids: a.executor_ids.clone(),
            })
            .collect();
        let plan = self.matcher.plan_refs(&demands, &offers, &known, now.wall);
        self.stats.plans += 1;

        // Outcomes first: they decide whether pods still wait.
        for (i, o) in plan.outcomes.iter().enumerate() {
            let uid = &candidates[i];
            match &o.outcome {
                Outcome::Placed { .. } => {}
                // Nothing was offered: unless it can never fit, the pod waits for the next
                // offer without a back-off (it did not fail; there was nothing to try).
                Outcome::Unplaced(why) if offers.is_empty() && why.never_fits.is_none() => {
                    let stage = Stage::Waiting {
                        ready_at: now.mono,
                        tried_gen: Some(self.offer_gen),
                        starved: true,
                    };
                    self.set_stage(uid, stage);
                }
                Outcome::Unplaced(why) => {
                    self.unplaced(uid, why.to_string(), now);
                }
                Outcome::Invalid(e) => {
                    self.set_stage(uid, Stage::Invalid);
                    self.report_invalid(uid, e.to_string(), now);
                }
            }
        }
        let mut used: Vec<String> = Vec::new();
        for launch in &plan.launches {
            let mut tasks = Vec::new();
            for t in &launch.tasks {
                let uid = &candidates[t.pod_index];
                if self.cfg.launch_policy == LaunchPolicy::OnePodPerOffer && !tasks.is_empty() {
                    // The baseline places one pod per agent and round; the rest wait (no penalty).
                    self.set_stage(
                        uid,
                        Stage::Waiting { ready_at: now.mono, tried_gen: None, starved: false },
                    );
                    continue;
                }
                if let Some(lt) = self.launch_task(uid, launch, t, now) {
                    tasks.push(lt);
                }
            }
            if tasks.is_empty() {
                continue;
            }
            used.extend(launch.offer_ids.iter().cloned());
            let exec_id = self.cfg.matcher.executor.id.clone();
            let agent = self.agents.entry(launch.agent_id.clone()).or_default();
            let executor = match &launch.executor {
                Some(res) => {
                    agent.executor_resources = Some(res.clone());
                    if !agent.executor_ids.contains(&exec_id) {
                        agent.executor_ids.push(exec_id);
                    }
                    ExecutorChoice::New(res.clone())
                }
                None => ExecutorChoice::Running(agent.executor_resources.clone()),
            };
            self.stats.tasks_launched += tasks.len() as u64;
            self.effects.push(Effect::Accept(Accept {
                agent_id: launch.agent_id.clone(),
                hostname: launch.hostname.clone(),
                offer_ids: launch.offer_ids.clone(),
                executor,
                tasks,
                refuse_seconds: 0.0,
            }));
        }
        for id in &used {
            self.offers.remove(id);
        }
        self.stats.offers_used += used.len() as u64;
        // What an ACCEPT leaves over comes back at once while pods wait; otherwise it is
        // refused like a decline.
        let refuse =
            if self.waiting.is_empty() || self.cfg.launch_policy == LaunchPolicy::OnePodPerOffer {
                self.cfg.refuse_seconds
            } else {
                0.0
            };
        for e in &mut self.effects {
            if let Effect::Accept(a) = e
                && a.refuse_seconds == 0.0
            {
                a.refuse_seconds = refuse;
            }
        }
        self.settle_offers();
        !used.is_empty()
    }

    fn breakout_allowed(&self, now: Now) -> bool {
        self.last_breakout.is_none_or(|at| now.mono >= at + self.cfg.listener_delay)
    }

    /// Whether pods in back-off have not been tried against the latest offers.
    fn breakout_pending(&self, now: Now) -> bool {
        self.breakout_due && self.in_backoff(now).next().is_some()
    }

    /// Waiting pods whose back-off has not run out, by when it does.
    fn in_backoff(&self, now: Now) -> impl Iterator<Item = &(Duration, Arc<str>)> {
        let after = (now.mono + Duration::from_nanos(1), Arc::<str>::from(""));
        self.ready.range(after..)
    }

    /// Sets the resources a new executor needs (they change with the static pods).
    pub fn set_executor_resources(
        &mut self,
        resources: km_offer_matcher::Scalars,
    ) -> Result<(), CoreError> {
        let mut cfg = self.cfg.matcher.clone();
        cfg.executor.resources = resources;
        self.matcher = Matcher::new(cfg.clone())?;
        self.cfg.matcher = cfg;
        Ok(())
    }

    /// Builds the task of a placed pod and records it.
    fn launch_task(
        &mut self,
        uid: &Arc<str>,
        launch: &km_offer_matcher::Launch,
        t: &km_offer_matcher::Task,
        now: Now,
    ) -> Option<LaunchTask> {
        let entry = self.pods.get(uid)?;
        let task_id: Arc<str> = task::task_id(uid, self.rng.next_u64() as u32).into();
        let offer_id = launch.offer_ids.first().map(String::as_str).unwrap_or_default();
        let annotations = task::launch_annotations(&task::LaunchFacts {
            task_id: &task_id,
            agent_id: &launch.agent_id,
            offer_id,
            executor_id: &self.cfg.matcher.executor.id,
            hostname: &launch.hostname,
            ports: &t.ports,
        });
        let pod: Result<Pod, String> = match entry.pod.json.as_deref() {
            Some(json) => serde_json::from_slice(json).map_err(|e| e.to_string()),
            None => Err("the pod object is not kept".to_owned()),
        };
        let data = pod
            .map(|pod| task::task_pod(&pod, &launch.hostname, &annotations, &t.ports))
            .and_then(|task_pod| serde_json::to_vec(&task_pod).map_err(|e| e.to_string()));
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                let msg = format!("cannot encode the pod: {e}");
                self.set_stage(uid, Stage::Invalid);
                self.report_invalid(uid, msg, now);
                return None;
            }
        };
        let pod_ref = entry.pod_ref();
        let lt = LaunchTask {
            task_id: task_id.to_string(),
            name: task::task_name(&entry.key.namespace, &entry.key.name),
            pod: pod_ref.clone(),
            resources: t.resources.clone(),
            data,
            labels: task::task_labels(&entry.key.namespace, &entry.key.name, uid),
            kill_grace: entry.pod.grace(self.cfg.default_grace),
        };
        self.tasks.insert(
            task_id.clone(),
            TaskEntry {
                id: task_id.clone(),
                pod: pod_ref,
                agent_id: launch.agent_id.as_str().into(),
                hostname: launch.hostname.as_str().into(),
                state: None,
                last_update_at: now.mono,
                bind: BindState::No,
                annotations,
                kill: None,
                pod_gone: false,
                executor_reports_status: false,
                running_written: false,
                ended: None,
            },
        );
        self.unreported.insert((now.mono, task_id.clone()));
        self.set_stage(uid, Stage::Task(task_id));
        Some(lt)
    }

    fn unplaced(&mut self, uid: &Arc<str>, message: String, now: Now) {
        let initial = self.cfg.initial_backoff;
        let max = self.cfg.max_backoff;
        let offer_gen = self.offer_gen;
        let Some(entry) = self.pods.get_mut(uid) else { return };
        entry.failures = entry.failures.saturating_add(1);
        let delay = backoff::jittered(initial, max, entry.failures, &mut self.rng);
        self.set_stage(
            uid,
            Stage::Waiting {
                ready_at: now.mono + delay,
                tried_gen: Some(offer_gen),
                starved: false,
            },
        );
        let Some(entry) = self.pods.get_mut(uid) else { return };
        let due = match &entry.report {
            None => true,
            Some((last, at)) => {
                *last != message
                    && now.mono >= *at + backoff::delay(initial, max, entry.failures - 1)
            }
        };
        if due {
            entry.report = Some((message.clone(), now.mono));
            let pod = entry.pod_ref();
            self.emit(Effect::Unschedulable { pod, message });
        }
    }

    /// Declines every held offer and suppresses offers once nothing waits; while pods wait,
    /// offers are held until they expire.
    fn settle_offers(&mut self) {
        if !self.waiting.is_empty() {
            return;
        }
        let decline: Vec<String> = std::mem::take(&mut self.offers).into_keys().collect();
        if !decline.is_empty() {
            self.stats.offers_declined += decline.len() as u64;
            self.revive_needed = true;
            self.emit(Effect::Decline {
                offer_ids: decline,
                refuse_seconds: self.cfg.refuse_seconds,
            });
        }
        if !self.suppressed && self.subscribed && self.synced {
            self.suppressed = true;
            self.revive_needed = true;
            self.emit(Effect::Suppress);
        }
    }

    fn expire_offers(&mut self, now: Now) {
        let expired: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, h)| h.expires <= now.mono)
            .map(|(id, _)| id.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for id in &expired {
            self.offers.remove(id);
        }
        self.stats.offers_declined += expired.len() as u64;
        self.revive_needed = true;
        self.emit(Effect::Decline { offer_ids: expired, refuse_seconds: self.cfg.refuse_seconds });
    }

    // === Mesos results ===

    fn on_accept_done(
        &mut self,
        agent_id: &str,
        task_ids: Vec<String>,
        outcome: AcceptOutcome,
        now: Now,
    ) {
        match outcome {
            AcceptOutcome::Accepted => {}
            AcceptOutcome::Unknown(_) => {
                // The master may have launched them: ask before launching anything again.
                let ids: Vec<Arc<str>> = task_ids
                    .iter()
                    .filter_map(|id| self.tasks.get_key_value(id.as_str()).map(|(k, _)| k.clone()))
                    .collect();
                self.reconcile_now(ids, now);
            }
            AcceptOutcome::Refused(error) => {
                for id in task_ids {
                    let Some(t) = self.tasks.get(id.as_str()) else { continue };
                    if t.state.is_some() {
                        // Updates arrived after all: it was launched.
                        continue;
                    }
                    let Some(t) = self.remove_task(id.as_str()) else { continue };
                    self.remember_finished(t.id.clone());
                    self.stats.launch_failures += 1;
                    let uid = t.pod.uid.clone();
                    if self.pods.get(&uid).is_some_and(|p| p.stage == Stage::Task(t.id.clone())) {
                        let delay = self.requeue_after_failure(&uid, now);
                        self.emit(Effect::Event {
                            pod: t.pod.clone(),
                            kind: EventType::Warning,
                            reason: "FailedLaunch",
                            message: format!(
                                "the master refused the launch on agent {agent_id} ({}): {error}; retrying in {}",
                                t.hostname,
                                secs(delay)
                            ),
                        });
                    }
                }
            }
        }
    }

    fn on_bind_done(&mut self, task_id: &str, result: WriteResult, now: Now) {
        let Some(t) = self.tasks.get_mut(task_id) else { return };
        match result {
            WriteResult::Ok => {
                t.bind = BindState::Done;
                self.stats.pods_bound += 1;
                let pod = t.pod.clone();
                let message = format!("Successfully assigned {pod} to {}", t.hostname);
                if self.placements.len() == PLACEMENTS_KEPT {
                    self.placements.pop_front();
                }
                self.placements.push_back((now.mono, pod.clone(), t.hostname.clone()));
                let write_running = t.state == Some(TaskState::Running)
                    && !t.executor_reports_status
                    && !t.running_written;
                if write_running {
                    t.running_written = true;
                }
                let ended = t.ended.take();
                self.emit(Effect::Event {
                    pod: pod.clone(),
                    kind: EventType::Normal,
                    reason: "Scheduled",
                    message,
                });
                if let Some(u) = ended {
                    self.task_ended(task_id, u, now);
                } else if write_running {
                    self.emit(Effect::SetPhase { pod, change: PhaseChange::Running });
                }
            }
            WriteResult::Rejected(why) => {
                t.bind = BindState::Refused;
                let pod = t.pod.clone();
                let id = t.id.clone();
                let ended = t.ended.is_some();
                if ended {
                    self.remove_task(task_id);
                    self.remember_finished(id.clone());
                } else {
                    self.kill(&id, self.cfg.default_grace, now);
                }
                // The pod, if it still exists, is not ours to run any more.
                if let Some(e) = self.pods.get(&pod.uid)
                    && e.stage == Stage::Task(Arc::from(task_id))
                {
                    self.remove_pod(&pod.uid.clone());
                }
                self.emit(Effect::Event {
                    pod,
                    kind: EventType::Warning,
                    reason: "FailedBinding",
                    message: format!("binding refused ({why}); task {id} stopped"),
                });
            }
        }
    }

    fn on_update(&mut self, u: TaskUpdate, now: Now) {
        *self.stats.updates.entry(u.state.name()).or_default() += 1;
        let ack = match (&u.uuid, &u.agent_id) {
            (Some(uuid), Some(agent)) if !uuid.is_empty() => Some(Effect::Acknowledge {
                task_id: u.task_id.clone(),
                agent_id: agent.clone(),
                uuid: uuid.clone(),
            }),
            _ => None,
        };
        if let Some(run) = self.recon.running.as_mut() {
            run.pending.remove(u.task_id.as_str());
        }
        if u.task_id.starts_with(SENTINEL_PREFIX) {
            if matches!(&self.recon.barrier, Barrier::Pending { sentinel, .. } if *sentinel == u.task_id)
            {
                self.recon.barrier = Barrier::Passed;
                self.dirty = true;
            }
            return;
        }
        if self.tasks.contains_key(u.task_id.as_str()) {
            self.known_update(u, now);
        } else if !self.finished_set.contains(u.task_id.as_str()) {
            self.unknown_update(u, now);
        }
        if let Some(ack) = ack {
            self.emit(ack);
        }
    }

    fn known_update(&mut self, u: TaskUpdate, now: Now) {
        let Some(t) = self.tasks.get_mut(u.task_id.as_str()) else { return };
        if t.state.is_none() {
            self.unreported.remove(&(t.last_update_at, t.id.clone()));
        }
        t.last_update_at = now.mono;
        if let Some(agent) = &u.agent_id
            && t.agent_id.is_empty()
        {
            t.agent_id = agent.as_str().into();
        }
        if u.state.is_terminal() {
            if t.bind == BindState::InFlight {
                t.state = Some(u.state);
                t.ended = Some(u);
                return;
            }
            let id = t.id.clone();
            self.task_ended(&id, u, now);
            return;
        }
        if u.executor_reports_status {
            t.executor_reports_status = true;
        }
        if t.state.is_none_or(|s| u.state > s) {
            t.state = Some(u.state);
        }
        let id = t.id.clone();
        let pod = t.pod.clone();
        let pod_live = self
            .pods
            .get(&pod.uid)
            .is_some_and(|p| p.stage == Stage::Task(id.clone()) && !p.deleting());
        let t = self.tasks.get_mut(&id).expect("present");
        if t.pod_gone || !pod_live {
            if t.kill.is_none() {
                let grace = self.cfg.default_grace;
                self.kill(&id, grace, now);
            }
            return;
        }
        match t.bind {
            BindState::No
                if matches!(u.state, TaskState::Starting | TaskState::Running)
                    && !t.hostname.is_empty() =>
            {
                t.bind = BindState::InFlight;
                let effect = Effect::Bind {
                    pod,
                    node: t.hostname.to_string(),
                    task_id: id.to_string(),
                    annotations: t.annotations.clone(),
                };
                self.emit(effect);
            }
            BindState::Done
                if t.state == Some(TaskState::Running)
                    && !t.executor_reports_status
                    && !t.running_written =>
            {
                t.running_written = true;
                self.emit(Effect::SetPhase { pod, change: PhaseChange::Running });
            }
            _ => {}
        }
    }

    /// A known task ended.
    fn task_ended(&mut self, task_id: &str, u: TaskUpdate, now: Now) {
        let Some(t) = self.remove_task(task_id) else { return };
        self.remember_finished(t.id.clone());
        let uid = t.pod.uid.clone();
        let ours = self.pods.get(&uid).is_some_and(|p| p.stage == Stage::Task(t.id.clone()));
        if !ours || t.pod_gone {
            return;
        }
        let deleting = self.pods.get(&uid).is_some_and(PodEntry::deleting);
        if deleting {
            self.set_stage(&uid, Stage::Done);
            self.emit(Effect::DeletePod { pod: t.pod.clone() });
            return;
        }
        let what = describe_update(&u, &t.hostname);
        if t.bind != BindState::Done {
            // Never bound: the launch failed; try again elsewhere.
            self.stats.launch_failures += 1;
            let delay = self.requeue_after_failure(&uid, now);
            self.emit(Effect::Event {
                pod: t.pod.clone(),
                kind: EventType::Warning,
                reason: "FailedLaunch",
                message: format!("{what}; retrying in {}", secs(delay)),
            });
            return;
        }
        self.set_stage(&uid, Stage::Done);
        let from_executor = u.source == Some(Source::Executor);
        let executor_wrote = t.executor_reports_status && from_executor;
        match u.state {
            TaskState::Finished => {
                if !executor_wrote {
                    self.emit(Effect::SetPhase {
                        pod: t.pod.clone(),
                        change: PhaseChange::Succeeded,
                    });
                }
                self.emit(Effect::Event {
                    pod: t.pod.clone(),
                    kind: EventType::Normal,
                    reason: "TaskFinished",
                    message: what,
                });
            }
            state => {
                self.stats.pods_failed += 1;
                let reason = failure_reason(state).to_owned();
                if !executor_wrote {
                    self.emit(Effect::SetPhase {
                        pod: t.pod.clone(),
                        change: PhaseChange::Failed {
                            reason: reason.clone(),
                            message: what.clone(),
                        },
                    });
                }
                self.emit(Effect::Event {
                    pod: t.pod.clone(),
                    kind: EventType::Warning,
                    reason: failure_reason(state),
                    message: what,
                });
            }
        }
    }

    fn unknown_update(&mut self, u: TaskUpdate, now: Now) {
        if !self.synced || u.state.is_terminal() {
            // Before the first pod listing nothing is known well enough to act on; the
            // reconciliation after it asks again.
            return;
        }
        let agent_id = u.agent_id.clone().unwrap_or_default();
        let adoptable = task::pod_uid_of(&u.task_id).and_then(|uid| {
            let p = self.pods.get(uid)?;
            let waiting = matches!(p.stage, Stage::Waiting { .. } | Stage::Invalid);
            (waiting && !p.deleting()).then(|| p.uid.clone())
        });
        match adoptable {
            Some(uid) if !agent_id.is_empty() => {
                // Launched by an incarnation that died before binding: adopt it.
                self.adopt(&uid, &u.task_id, &agent_id, now);
                self.known_update(u, now);
            }
            _ => {
                let agent = (!agent_id.is_empty()).then_some(agent_id);
                self.stats.kills += 1;
                self.emit(Effect::Kill {
                    task_id: u.task_id,
                    agent_id: agent,
                    grace: self.cfg.default_grace,
                });
            }
        }
    }

    fn adopt(&mut self, uid: &Arc<str>, task_id: &str, agent_id: &str, now: Now) {
        let hostname = self.hostname_of(agent_id).unwrap_or_default();
        let task_id: Arc<str> = task_id.into();
        let Some(entry) = self.pods.get(uid) else { return };
        let pod = entry.pod_ref();
        self.set_stage(uid, Stage::Task(task_id.clone()));
        self.unreported.insert((now.mono, task_id.clone()));
        let mut t = TaskEntry {
            id: task_id.clone(),
            pod,
            agent_id: agent_id.into(),
            hostname: "".into(),
            state: None,
            last_update_at: now.mono,
            bind: BindState::No,
            annotations: Vec::new(),
            kill: None,
            pod_gone: false,
            executor_reports_status: false,
            running_written: false,
            ended: None,
        };
        if hostname.is_empty() {
            self.hostless.insert(task_id.clone());
        } else {
            set_host(&mut t, &hostname, &self.cfg.matcher.executor.id);
        }
        self.tasks.insert(task_id, t);
    }

    /// Gives adopted tasks the hostname of their agent once it is known, and binds them.
    fn resolve_hostless(&mut self) {
        if self.hostless.is_empty() {
            return;
        }
        let ids: Vec<Arc<str>> = self.hostless.iter().cloned().collect();
        for id in ids {
            let Some(agent_id) = self.tasks.get(&id).map(|t| t.agent_id.clone()) else {
                self.hostless.remove(&id);
                continue;
            };
            let Some(hostname) = self.hostname_of(&agent_id) else { continue };
            self.hostless.remove(&id);
            let exec = self.cfg.matcher.executor.id.clone();
            let Some(t) = self.tasks.get_mut(&id) else { continue };
            set_host(t, &hostname, &exec);
            if t.bind == BindState::No
                && matches!(t.state, Some(TaskState::Starting | TaskState::Running))
            {
                t.bind = BindState::InFlight;
                let effect = Effect::Bind {
                    pod: t.pod.clone(),
                    node: hostname,
                    task_id: id.to_string(),
                    annotations: t.annotations.clone(),
                };
                self.emit(effect);
            }
        }
    }

    fn hostname_of(&self, agent_id: &str) -> Option<String> {
        if let Some(a) = self.agents.get(agent_id)
            && !a.hostname.is_empty()
        {
            return Some(a.hostname.clone());
        }
        self.nodes
            .values()
            .find(|n| n.agent_id.as_deref() == Some(agent_id))
            .map(|n| n.name.clone())
    }

    fn remember_finished(&mut self, id: Arc<str>) {
        if self.finished_set.insert(id.clone()) {
            self.finished.push_back(id);
            while self.finished.len() > FINISHED_MEMORY {
                if let Some(old) = self.finished.pop_front() {
                    self.finished_set.remove(&old);
                }
            }
        }
    }

    fn kill_for_deletion(&mut self, task_id: &Arc<str>, now: Now) {
        let grace = self
            .tasks
            .get(task_id)
            .and_then(|t| self.pods.get(&t.pod.uid))
            .map_or(self.cfg.default_grace, |p| p.pod.deletion_grace(self.cfg.default_grace));
        if self.tasks.get(task_id).is_some_and(|t| t.kill.is_none()) {
            self.kill(task_id, grace, now);
        }
    }

    fn kill(&mut self, task_id: &Arc<str>, grace: Duration, now: Now) {
        let Some(t) = self.tasks.get_mut(task_id) else { return };
        t.kill = Some((grace, now.mono));
        self.killing.insert(t.id.clone());
        let agent = (!t.agent_id.is_empty()).then(|| t.agent_id.to_string());
        self.stats.kills += 1;
        self.effects.push(Effect::Kill { task_id: task_id.to_string(), agent_id: agent, grace });
    }

    fn kamikaze(&mut self) {
        let mut targets: BTreeSet<(String, String)> = BTreeSet::new();
        for (agent_id, a) in &self.agents {
            for e in &a.executor_ids {
                targets.insert((agent_id.clone(), e.clone()));
            }
        }
        for t in self.tasks.values() {
            if !t.agent_id.is_empty() {
                targets.insert((t.agent_id.to_string(), self.cfg.matcher.executor.id.clone()));
            }
        }
        for (agent_id, executor_id) in targets {
            self.emit(Effect::Message { agent_id, executor_id, data: b"kamikaze".to_vec() });
        }
    }

    // === time ===

    /// Acts on deadlines: offer expiry, kill retries, reconciliation, launch time-outs, back-off.
    pub fn tick(&mut self, now: Now) {
        self.expire_offers(now);
        self.offer_history.prune(now.mono);
        // Kill retries.
        let retries: Vec<(Arc<str>, Duration)> = self
            .killing
            .iter()
            .filter_map(|id| {
                let (grace, at) = self.tasks.get(id)?.kill?;
                (now.mono >= at + grace + self.cfg.kill_retry).then(|| (id.clone(), grace))
            })
            .collect();
        for (id, grace) in retries {
            self.kill(&id, grace, now);
        }
        // Back-offs that ran out, or new offers for pods in back-off.
        let backoff_over = self.ready.first().is_some_and(|(at, _)| *at <= now.mono);
        if backoff_over || (self.breakout_allowed(now) && self.breakout_pending(now)) {
            self.dirty = true;
        }
        self.reconcile(now);
    }

    fn reconcile(&mut self, now: Now) {
        if !self.subscribed || !self.synced {
            return;
        }
        match &self.recon.barrier {
            Barrier::Needed => self.send_barrier(now, self.cfg.initial_backoff),
            Barrier::Pending { retry_at, backoff, .. } if now.mono >= *retry_at => {
                let next = (*backoff * 2).min(BARRIER_MAX_RETRY);
                self.send_barrier(now, next);
            }
            _ => {}
        }
        // Launched tasks that never reported: ask about them.
        let due = now.mono.saturating_sub(self.cfg.launch_timeout);
        let silent: Vec<(Duration, Arc<str>)> =
            self.unreported.iter().take_while(|(at, _)| *at <= due).cloned().collect();
        if !silent.is_empty() && self.recon.running.is_none() {
            let mut ids = Vec::with_capacity(silent.len());
            for key in silent {
                self.unreported.remove(&key);
                if let Some(t) = self.tasks.get_mut(&key.1) {
                    t.last_update_at = now.mono;
                    self.unreported.insert((now.mono, key.1.clone()));
                }
                ids.push(key.1);
            }
            // Not a run the cooldown should count: keep it where it was.
            let last = self.recon.last_run;
            self.start_explicit(ids, now);
            self.recon.last_run = last;
        }
        let cooled =
            self.recon.last_run.is_none_or(|at| now.mono >= at + self.cfg.reconcile_cooldown);
        if self.recon.explicit_wanted && (self.recon.explicit_now || cooled) {
            self.recon.explicit_wanted = false;
            self.recon.explicit_now = false;
            let all: Vec<Arc<str>> = self.tasks.keys().cloned().collect();
            self.start_explicit(all, now);
        } else if let Some(run) = self.recon.running.as_mut() {
            run.pending.retain(|id| self.tasks.contains_key(id));
            if run.pending.is_empty() || now.mono >= run.started + self.cfg.explicit_abort {
                self.recon.running = None;
            } else if now.mono >= run.next_retry {
                run.backoff = (run.backoff * 2).min(self.cfg.explicit_max_backoff);
                run.next_retry = now.mono + run.backoff;
                let ids: Vec<Arc<str>> = run.pending.iter().cloned().collect();
                self.send_reconcile(&ids);
            }
        }
        let implicit_due = self.recon.implicit_at.is_some_and(|at| now.mono >= at);
        if self.recon.running.is_none() && (implicit_due || (self.recon.implicit_wanted && cooled))
        {
            self.recon.implicit_wanted = false;
            self.recon.last_run = Some(now.mono);
            self.recon.implicit_at = (!self.cfg.reconcile_interval.is_zero())
                .then(|| now.mono + self.cfg.reconcile_interval);
            self.stats.implicit_reconciliations += 1;
            self.emit(Effect::Reconcile { tasks: Vec::new() });
        }
    }

    fn send_barrier(&mut self, now: Now, backoff: Duration) {
        let sentinel = format!("{SENTINEL_PREFIX}{:016x}", self.rng.next_u64());
        self.stats.implicit_reconciliations += 1;
        self.emit(Effect::Reconcile { tasks: Vec::new() });
        self.emit(Effect::Reconcile { tasks: vec![(sentinel.clone(), None)] });
        self.recon.barrier = Barrier::Pending { sentinel, retry_at: now.mono + backoff, backoff };
    }

    /// Asks about these tasks at once, as part of the running explicit reconciliation (or a new
    /// one).
    fn reconcile_now(&mut self, ids: Vec<Arc<str>>, now: Now) {
        if ids.is_empty() {
            return;
        }
        match self.recon.running.as_mut() {
            Some(run) => {
                run.pending.extend(ids.iter().cloned());
                self.send_reconcile(&ids);
            }
            None => {
                let last = self.recon.last_run;
                self.start_explicit(ids, now);
                // Not an operator- or timer-requested run: keep the cooldown where it was.
                self.recon.last_run = last;
            }
        }
    }

    fn start_explicit(&mut self, ids: Vec<Arc<str>>, now: Now) {
        self.recon.last_run = Some(now.mono);
        if ids.is_empty() {
            self.recon.running = None;
            return;
        }
        self.send_reconcile(&ids);
        let first = self.cfg.initial_backoff.min(self.cfg.explicit_max_backoff);
        self.recon.running = Some(ExplicitRun {
            started: now.mono,
            pending: ids.into_iter().collect(),
            next_retry: now.mono + first,
            backoff: first,
        });
    }

    fn send_reconcile(&mut self, ids: &[Arc<str>]) {
        let tasks: Vec<(String, Option<String>)> = ids
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .map(|t| (t.id.to_string(), (!t.agent_id.is_empty()).then(|| t.agent_id.to_string())))
            .collect();
        if tasks.is_empty() {
            return;
        }
        self.stats.explicit_reconciliations += 1;
        self.emit(Effect::Reconcile { tasks });
    }

    /// The next time after `now` that [`Core::tick`] has something to do, if any.
    pub fn next_wakeup(&self, now: Now) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        let mut at = |d: Duration| next = Some(next.map_or(d, |n: Duration| n.min(d)));
        if let Some(e) = self.offers.values().map(|o| o.expires).min() {
            at(e);
        }
        for id in &self.killing {
            if let Some((grace, sent)) = self.tasks.get(id).and_then(|t| t.kill) {
                at(sent + grace + self.cfg.kill_retry);
            }
        }
        if let Some((launched, _)) = self.unreported.first() {
            at(*launched + self.cfg.launch_timeout);
        }
        if let Some(o) = self.offer_history.order.front() {
            at(o.0);
        }
        let planning = self.subscribed && self.synced;
        if planning {
            match &self.recon.barrier {
                Barrier::Needed => at(now.mono),
                Barrier::Pending { retry_at, .. } => at(*retry_at),
                Barrier::Passed => {}
            }
            if self.recon.explicit_wanted && self.recon.explicit_now {
                at(now.mono);
            }
            if let Some(run) = &self.recon.running {
                at(run.next_retry.min(run.started + self.cfg.explicit_abort));
            }
            if let Some(i) = self.recon.implicit_at {
                at(i);
            }
            if self.recon.explicit_wanted || self.recon.implicit_wanted {
                at(self.recon.last_run.map_or(now.mono, |l| l + self.cfg.reconcile_cooldown));
            }
            if let Some((ready, _)) = self.in_backoff(now).next() {
                at(*ready);
            }
            if self.breakout_pending(now)
                && let Some(last) = self.last_breakout
            {
                at(last + self.cfg.listener_delay);
            }
        }
        next
    }

    // === debug views ===

    /// `/debug/scheduler/podqueue`: waiting pods, one per line.
    pub fn podqueue_text(&self, now: Now) -> String {
        let mut out = String::new();
        for uid in &self.waiting {
            let Some(p) = self.pods.get(uid) else { continue };
            let ready = match p.stage {
                Stage::Waiting { ready_at, .. } => secs(ready_at.saturating_sub(now.mono)),
                _ => "-".into(),
            };
            let why = p.report.as_ref().map_or("", |(m, _)| m.as_str());
            out.push_str(&format!(
                "{}\t{}\tready in {ready}\tfailures {}\t{why}\n",
                p.key, p.uid, p.failures
            ));
        }
        out
    }

    /// The web page's view at `now`.
    pub fn ui_view(&self, now: Now) -> UiView {
        let pending = self
            .waiting
            .iter()
            .chain(self.invalid.iter())
            .filter_map(|uid| self.pods.get(uid))
            .map(|p| {
                let why = match (&p.stage, &p.demand, &p.report) {
                    (Stage::Invalid, Err(e), _) => format!("invalid: {e}"),
                    (_, _, Some((m, _))) => m.clone(),
                    _ => "waiting for offers".to_owned(),
                };
                (p.key.to_string(), why, p.failures)
            })
            .collect();
        let placed = self
            .placements
            .iter()
            .rev()
            .map(|(at, pod, host)| {
                (pod.to_string(), host.to_string(), now.mono.saturating_sub(*at).as_secs_f64())
            })
            .collect();
        let executors =
            self.agents.values().map(|a| (a.hostname.clone(), a.executor_ids.clone())).collect();
        UiView { pending, placed, executor_id: self.cfg.matcher.executor.id.clone(), executors }
    }

    /// `/debug/scheduler/podstore`: every tracked pod with its stage.
    pub fn podstore_text(&self) -> String {
        let mut out = String::new();
        for p in self.pods.values() {
            let stage = match &p.stage {
                Stage::Waiting { .. } => "waiting".to_owned(),
                Stage::Invalid => "invalid".to_owned(),
                Stage::Task(id) => format!("task {id}"),
                Stage::Done => "done".to_owned(),
            };
            out.push_str(&format!("{}\t{}\t{stage}\n", p.key, p.uid));
        }
        out
    }

    /// `/debug/registry/tasks`: task ID, pod, state, agent, host.
    pub fn tasks_text(&self) -> String {
        let mut out = String::new();
        for t in self.tasks.values() {
            let state = t.state.map_or("LAUNCHING", TaskState::name);
            let bound = match t.bind {
                BindState::Done => "bound",
                BindState::InFlight => "binding",
                BindState::No => "unbound",
                BindState::Refused => "refused",
            };
            out.push_str(&format!(
                "{}\t{}\t{state}\t{bound}\t{}\t{}\n",
                t.id, t.pod, t.agent_id, t.hostname
            ));
        }
        out
    }
}

enum Class {
    Ignore,
    Candidate,
    Bound { task_id: String, agent_id: Option<String> },
}

/// Records the host of an adopted task and the annotations its binding carries (the ports it
/// was given are not known any more).
fn set_host(t: &mut TaskEntry, hostname: &str, executor_id: &str) {
    t.hostname = hostname.into();
    t.annotations = task::launch_annotations(&task::LaunchFacts {
        task_id: &t.id,
        agent_id: &t.agent_id,
        offer_id: "",
        executor_id,
        hostname,
        ports: &[],
    })
    .into_iter()
    .filter(|(k, _)| k != task::OFFER_ID)
    .collect();
}

fn pod_key(pod: &Pod) -> PodKey {
    PodKey::new(
        pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn total_cpus_mem(rs: &[Resource]) -> (i64, i64) {
    let mut cpus = 0i64;
    let mut mem = 0i64;
    for r in rs {
        if let Some(s) = r.as_scalar() {
            match r.name.as_ref() {
                "cpus" => cpus = cpus.saturating_add(s.milli()),
                "mem" => mem = mem.saturating_add(s.milli()),
                _ => {}
            }
        }
    }
    (cpus, mem)
}

fn failure_reason(state: TaskState) -> &'static str {
    match state {
        TaskState::Failed => "TaskFailed",
        TaskState::Killed => "TaskKilled",
        TaskState::Error => "TaskError",
        TaskState::Lost => "TaskLost",
        TaskState::Dropped => "TaskDropped",
        TaskState::Unreachable => "AgentUnreachable",
        TaskState::Gone => "AgentGone",
        TaskState::GoneByOperator => "AgentGoneByOperator",
        TaskState::Unknown => "TaskUnknown",
        TaskState::Finished => "TaskFinished",
        TaskState::Staging | TaskState::Starting | TaskState::Running | TaskState::Killing => {
            "TaskRunning"
        }
    }
}

/// `TASK_LOST on h1 (REASON_AGENT_REMOVED): agent removed`.
fn describe_update(u: &TaskUpdate, hostname: &str) -> String {
    let mut s = format!("{} on {hostname}", u.state);
    if let Some(r) = &u.reason {
        s.push_str(&format!(" ({r})"));
    }
    if let Some(m) = u.message.as_deref().filter(|m| !m.is_empty()) {
        s.push_str(": ");
        s.push_str(m);
    }
    s
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
