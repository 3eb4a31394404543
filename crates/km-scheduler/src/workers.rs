//! The shell's IO lanes: each kind of call has a fixed number of workers pulling jobs from a
//! queue, so a burst of ten thousand bindings is ten thousand small queued jobs and a hundred
//! requests in flight, not ten thousand suspended requests.
//!
//! Lanes: ACCEPTs; other Mesos calls (acknowledgements, kills, messages); bindings; pod phases
//! (which wait, up to five seconds, while bindings are queued: binding is the scheduler's first
//! job, and the shell's event writer waits the same way); other API writes (conditions,
//! deletions, nodes). Results that the core needs come back to the
//! loop as inputs.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use km_mesos::scheduler as mesos;
use km_mesos::v1;
use km_scheduler_core::{
    AcceptOutcome, Input, LaunchTask, NodeSpec, PhaseChange, PodRef, WriteResult,
};
use tokio::sync::{Mutex, Notify, mpsc};

use crate::convert;
use crate::kubeapi;
use crate::metrics::Metrics;

/// ACCEPT workers.
const ACCEPT_WORKERS: usize = 16;
/// Workers for acknowledgements, kills and messages.
const CALL_WORKERS: usize = 64;
/// Binding workers.
const BIND_WORKERS: usize = 128;
/// Pod phase workers.
const PHASE_WORKERS: usize = 16;
/// Workers for the other API writes.
const WRITE_WORKERS: usize = 32;
/// How long a phase write waits, at most, while bindings are queued.
const PHASES_YIELD: Duration = Duration::from_secs(5);

/// What every worker needs.
pub(crate) struct Ctx {
    /// The Mesos client (replaced when the framework subscribes anew).
    pub(crate) sched: std::sync::RwLock<mesos::Scheduler>,
    /// The API client.
    pub(crate) client: kube::Client,
    /// Where results go back to the loop.
    pub(crate) results: mpsc::UnboundedSender<Input>,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    binds: BindsQueued,
}

impl Ctx {
    pub(crate) fn new(
        sched: mesos::Scheduler,
        client: kube::Client,
        results: mpsc::UnboundedSender<Input>,
        metrics: Arc<Metrics>,
    ) -> Ctx {
        Ctx {
            sched: std::sync::RwLock::new(sched),
            client,
            results,
            metrics,
            binds: BindsQueued::default(),
        }
    }

    /// Waits, at most five seconds, until no binding is queued (for writes that can wait).
    pub(crate) async fn binds_quiet(&self) {
        self.binds.quiet(PHASES_YIELD).await;
    }

    fn sched(&self) -> mesos::Scheduler {
        self.sched.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A Mesos call.
pub(crate) enum MesosJob {
    /// ACCEPT with one LAUNCH.
    Accept {
        /// Agent.
        agent_id: String,
        /// Offers.
        offer_ids: Vec<v1::OfferId>,
        /// The tasks to LAUNCH, turned into TaskInfos when the call is sent.
        tasks: Vec<LaunchTask>,
        /// Their executor.
        executor: Arc<v1::ExecutorInfo>,
        /// Filter for what is left over.
        refuse_seconds: f64,
        /// Tasks launched (reported back with the outcome).
        task_ids: Vec<String>,
    },
    /// KILL.
    Kill {
        /// Task.
        task_id: String,
        /// Agent.
        agent_id: Option<String>,
        /// Grace period.
        grace: Duration,
    },
    /// ACKNOWLEDGE.
    Ack {
        /// Task.
        task_id: String,
        /// Agent.
        agent_id: String,
        /// Update UUID.
        uuid: Vec<u8>,
    },
    /// MESSAGE.
    Message {
        /// Agent.
        agent_id: String,
        /// Executor.
        executor_id: String,
        /// Payload.
        data: Vec<u8>,
    },
}

/// An API write.
pub(crate) enum ApiJob {
    /// A Binding.
    Bind {
        /// Pod.
        pod: PodRef,
        /// Node.
        node: String,
        /// Task.
        task_id: String,
        /// Annotations.
        annotations: Vec<(String, String)>,
    },
    /// A phase.
    Phase {
        /// Pod.
        pod: PodRef,
        /// Change.
        change: PhaseChange,
    },
    /// PodScheduled=False.
    Unschedulable {
        /// Pod.
        pod: PodRef,
        /// Why.
        message: String,
    },
    /// The end of a graceful deletion.
    Delete {
        /// Pod.
        pod: PodRef,
    },
    /// A Node.
    Node(NodeSpec),
    /// The executor started on a node.
    RecordExecutor {
        /// Node.
        node: String,
        /// Executor ID.
        executor_id: String,
        /// Encoded resources.
        resources: String,
    },
}

/// The queues of the lanes.
pub(crate) struct Lanes {
    ctx: Arc<Ctx>,
    accepts: mpsc::UnboundedSender<MesosJob>,
    calls: mpsc::UnboundedSender<MesosJob>,
    binds: mpsc::UnboundedSender<ApiJob>,
    phases: mpsc::UnboundedSender<ApiJob>,
    writes: mpsc::UnboundedSender<ApiJob>,
}

fn lane<J, F, Fut>(workers: usize, ctx: &Arc<Ctx>, run: F) -> mpsc::UnboundedSender<J>
where
    J: Send + 'static,
    F: Fn(Arc<Ctx>, J) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel::<J>();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..workers {
        let rx = rx.clone();
        let ctx = ctx.clone();
        let run = run.clone();
        tokio::spawn(async move {
            loop {
                let job = rx.lock().await.recv().await;
                let Some(job) = job else { return };
                run(ctx.clone(), job).await;
            }
        });
    }
    tx
}

impl Lanes {
    /// Starts every lane's workers.
    pub(crate) fn start(ctx: Arc<Ctx>) -> Lanes {
        Lanes {
            accepts: lane(ACCEPT_WORKERS, &ctx, mesos_job),
            calls: lane(CALL_WORKERS, &ctx, mesos_job),
            binds: lane(BIND_WORKERS, &ctx, api_job),
            phases: lane(PHASE_WORKERS, &ctx, |ctx: Arc<Ctx>, job| async move {
                ctx.binds.quiet(PHASES_YIELD).await;
                api_job(ctx, job).await;
            }),
            writes: lane(WRITE_WORKERS, &ctx, api_job),
            ctx,
        }
    }

    /// The shared context (to swap the Mesos client).
    pub(crate) fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Queues a Mesos call.
    pub(crate) fn mesos(&self, job: MesosJob) {
        let lane = if matches!(job, MesosJob::Accept { .. }) { &self.accepts } else { &self.calls };
        let _ = lane.send(job);
    }

    /// Queues an API write.
    pub(crate) fn api(&self, job: ApiJob) {
        let lane = match &job {
            ApiJob::Bind { .. } => {
                self.ctx.binds.start();
                &self.binds
            }
            ApiJob::Phase { .. } => &self.phases,
            _ => &self.writes,
        };
        let _ = lane.send(job);
    }
}

async fn mesos_job(ctx: Arc<Ctx>, job: MesosJob) {
    let sched = ctx.sched();
    match job {
        MesosJob::Accept { agent_id, offer_ids, tasks, executor, refuse_seconds, task_ids } => {
            let task_infos =
                tasks.into_iter().map(|t| convert::task_info(t, &agent_id, &executor)).collect();
            let launch = v1::offer::Operation {
                r#type: Some(v1::offer::operation::Type::Launch as i32),
                launch: Some(v1::offer::operation::Launch { task_infos }),
                ..Default::default()
            };
            let filters = v1::Filters { refuse_seconds: Some(refuse_seconds) };
            let outcome = match sched.accept(offer_ids, vec![launch], Some(filters)).await {
                Ok(()) => AcceptOutcome::Accepted,
                Err(e) => {
                    ctx.metrics.mesos_error("accept");
                    tracing::warn!(agent = %agent_id, "ACCEPT failed: {e}");
                    let refused = matches!(e, mesos::Error::NotSubscribed)
                        || e.status().is_some_and(|s| s.is_client_error());
                    if refused {
                        AcceptOutcome::Refused(e.to_string())
                    } else {
                        AcceptOutcome::Unknown(e.to_string())
                    }
                }
            };
            let _ = ctx.results.send(Input::AcceptDone { agent_id, task_ids, outcome });
        }
        MesosJob::Kill { task_id, agent_id, grace } => {
            let policy = v1::KillPolicy { grace_period: Some(convert::duration_info(grace)) };
            let agent = agent_id.map(|value| v1::AgentId { value });
            if let Err(e) =
                sched.kill(v1::TaskId { value: task_id.clone() }, agent, Some(policy)).await
            {
                ctx.metrics.mesos_error("kill");
                tracing::warn!(task = %task_id, "KILL failed: {e}");
            }
        }
        MesosJob::Ack { task_id, agent_id, uuid } => {
            let ack = v1::scheduler::call::Acknowledge {
                agent_id: v1::AgentId { value: agent_id },
                task_id: v1::TaskId { value: task_id.clone() },
                uuid,
            };
            let mut call = v1::scheduler::Call::default();
            call.set_type(v1::scheduler::call::Type::Acknowledge);
            call.acknowledge = Some(ack);
            if let Err(e) = sched.call(call).await {
                ctx.metrics.mesos_error("acknowledge");
                tracing::warn!(task = %task_id, "ACKNOWLEDGE failed: {e}");
            }
        }
        MesosJob::Message { agent_id, executor_id, data } => {
            let agent = v1::AgentId { value: agent_id.clone() };
            if let Err(e) = sched.message(agent, v1::ExecutorId { value: executor_id }, data).await
            {
                ctx.metrics.mesos_error("message");
                tracing::warn!(agent = %agent_id, "MESSAGE failed: {e}");
            }
        }
    }
}

async fn api_job(ctx: Arc<Ctx>, job: ApiJob) {
    let client = &ctx.client;
    match job {
        ApiJob::Bind { pod, node, task_id, annotations } => {
            let result = kubeapi::bind(client, &pod, &node, &annotations).await;
            ctx.binds.done();
            if let WriteResult::Rejected(why) = &result {
                ctx.metrics.api_error("bind");
                tracing::warn!(%pod, %node, "binding refused: {why}");
            }
            let _ = ctx.results.send(Input::BindDone { task_id, result });
        }
        ApiJob::Phase { pod, change } => {
            if let Err(e) = kubeapi::set_phase(client, &pod, &change).await {
                ctx.metrics.api_error("phase");
                tracing::warn!(%pod, "cannot write the pod phase: {e}");
            }
        }
        ApiJob::Unschedulable { pod, message } => {
            if let Err(e) = kubeapi::unschedulable(client, &pod, &message).await {
                ctx.metrics.api_error("condition");
                tracing::warn!(%pod, "cannot set PodScheduled=False: {e}");
            }
        }
        ApiJob::Delete { pod } => {
            if let Err(e) = kubeapi::delete_pod(client, &pod).await {
                ctx.metrics.api_error("delete");
                tracing::warn!(%pod, "cannot complete the deletion: {e}");
            }
        }
        ApiJob::Node(spec) => {
            if let Err(e) = kubeapi::ensure_node(client, &spec).await {
                ctx.metrics.api_error("node");
                tracing::warn!(node = %spec.name, "cannot register the node: {e}");
            }
        }
        ApiJob::RecordExecutor { node, executor_id, resources } => {
            if let Err(e) = kubeapi::record_executor(client, &node, &executor_id, &resources).await
            {
                ctx.metrics.api_error("node");
                tracing::warn!(%node, "cannot record the executor on the node: {e}");
            }
        }
    }
}

/// Bindings queued or in flight, so that phase writes can let them go first.
#[derive(Default)]
struct BindsQueued {
    count: AtomicUsize,
    none: Notify,
}

impl BindsQueued {
    fn start(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn done(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.none.notify_waiters();
        }
    }

    /// Waits until no binding is queued, or `limit` has passed.
    async fn quiet(&self, limit: Duration) {
        let wait = async {
            loop {
                let notified = self.none.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if self.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}
