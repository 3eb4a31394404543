//! A client of the Mesos v1 scheduler API (`/api/v1/scheduler`).
//!
//! [`Scheduler::start`] spawns a driver task that keeps one subscription
//! alive and returns a cloneable [`Scheduler`] handle for calls together with
//! an [`Events`] receiver. The driver:
//!
//! - SUBSCRIBEs (with the framework ID once known, so a re-subscription is a
//!   failover of the same framework), following 307 redirects to the leader;
//! - reads the RecordIO event stream on its own connection, keeps the
//!   `Mesos-Stream-Id` for every later call, and forwards events;
//! - declares the stream dead after `missed_heartbeats` heartbeat intervals
//!   without any event (Mesos heartbeats every 15 s), or on EOF, error or a
//!   non-200 answer, and re-subscribes after a jittered exponential backoff;
//! - stops for good on an ERROR event (the master refused or replaced this
//!   subscription), after TEARDOWN, or when the [`Events`] receiver is dropped.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use reqwest::StatusCode;
use tokio::sync::{mpsc, watch};
use url::Url;

use crate::codec::ContentType;
use crate::http_util::{self, CallError, MESOS_STREAM_ID, RecordReader, StreamError};
use crate::v1::scheduler::{Call, call, event};
use crate::v1::{self, FrameworkId};

pub use crate::http_util::CallError as Error;
pub use crate::v1::scheduler::Event as MesosEvent;

/// The longest heartbeat interval taken from a master.
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(86_400);
/// The path of the scheduler endpoint on a master.
pub const SCHEDULER_PATH: &str = "/api/v1/scheduler";

/// Principal and secret for HTTP basic authentication.
#[derive(Clone)]
pub struct Credentials {
    /// `FrameworkInfo.principal`.
    pub principal: String,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("principal", &self.principal).finish_non_exhaustive()
    }
}

/// How to reach the master and who we are.
#[derive(Debug, Clone)]
pub struct Config {
    /// Any master, as `http://host:port`; non-leaders redirect to the leader.
    pub master: Url,
    /// More masters of the same cluster, tried in turn (after `master`) when the one in use
    /// cannot be reached.
    pub other_masters: Vec<Url>,
    /// The framework to subscribe. Set `id` to fail over an existing framework.
    pub framework: v1::FrameworkInfo,
    /// Roles to start suppressed.
    pub suppressed_roles: Vec<String>,
    /// Encoding of calls and events.
    pub content_type: ContentType,
    /// Optional HTTP basic authentication.
    pub credentials: Option<Credentials>,
    /// First re-subscription delay.
    pub min_backoff: Duration,
    /// Largest re-subscription delay.
    pub max_backoff: Duration,
    /// Heartbeat intervals without any event after which the stream is dead.
    pub missed_heartbeats: u32,
    /// Timeout of ordinary calls and of connecting.
    pub call_timeout: Duration,
}

impl Config {
    /// Defaults as the Mesos docs advise: protobuf, backoff capped at 15 s,
    /// 5 missed heartbeats, 75 s call timeout.
    pub fn new(master: Url, framework: v1::FrameworkInfo) -> Self {
        Self {
            master,
            other_masters: Vec::new(),
            framework,
            suppressed_roles: Vec::new(),
            content_type: ContentType::Protobuf,
            credentials: None,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(15),
            missed_heartbeats: 5,
            call_timeout: Duration::from_secs(75),
        }
    }
}

/// What the driver reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// A subscription is live (first one, or after a re-subscription).
    Subscribed {
        /// The framework's ID (assigned by the master on first subscription).
        framework_id: FrameworkId,
        /// The master that accepted the subscription.
        master: Url,
        /// Mesos's heartbeat interval.
        heartbeat_interval: Duration,
        /// The leading master, as it describes itself.
        master_info: Option<v1::MasterInfo>,
    },
    /// Any other event from the master: OFFERS, RESCIND, UPDATE, MESSAGE,
    /// FAILURE, ERROR, … (HEARTBEATs are consumed by the driver).
    Mesos(MesosEvent),
    /// The subscription was lost or could not be made; the driver retries
    /// after `retry_in`.
    Disconnected {
        /// Why.
        reason: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
}

/// The receiving end of the driver's events. The driver stops when this is
/// dropped; `recv` returns `None` once the driver has stopped for good.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

#[derive(Debug, Clone)]
struct Session {
    framework_id: FrameworkId,
    stream_id: String,
    endpoint: Url,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    calls: reqwest::Client,
    session: watch::Sender<Option<Session>>,
    /// Set by TEARDOWN: the driver must not re-subscribe.
    stopping: watch::Sender<bool>,
    /// Set by the driver when it has stopped for good.
    stopped: watch::Sender<bool>,
}

/// A handle for scheduler calls; cheap to clone.
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    /// Starts the driver on the current tokio runtime.
    pub fn start(config: Config) -> Result<(Scheduler, Events), CallError> {
        let calls = client(&config, true)?;
        let (session, _) = watch::channel(None);
        let (stopping, _) = watch::channel(false);
        let (stopped, _) = watch::channel(false);
        let inner = Arc::new(Inner { config, calls, session, stopping, stopped });
        let (tx, rx) = mpsc::channel(1024);
        let stream_client = client(&inner.config, false)?;
        tokio::spawn(drive(Arc::clone(&inner), stream_client, tx));
        Ok((Scheduler { inner }, Events { rx }))
    }

    /// The framework ID of the live subscription, if any.
    pub fn framework_id(&self) -> Option<FrameworkId> {
        self.inner.session.borrow().as_ref().map(|s| s.framework_id.clone())
    }

    /// Waits until a subscription is live and returns the framework ID.
    pub async fn subscribed(&self) -> FrameworkId {
        let mut rx = self.inner.session.subscribe();
        loop {
            if let Some(s) = rx.borrow_and_update().as_ref() {
                return s.framework_id.clone();
            }
            if rx.changed().await.is_err() {
                // The sender lives in `inner`, which we hold: cannot happen.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until the driver has stopped for good: after TEARDOWN, an ERROR event, or once the
    /// [`Events`] receiver was dropped. Nothing is subscribed again after this returns.
    pub async fn stopped(&self) {
        let mut rx = self.inner.stopped.subscribe();
        // The sender lives in `inner`, which we hold: it cannot close.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Sends any call on the live subscription (framework ID and stream ID
    /// are filled in). Mesos answers 202 for every call but SUBSCRIBE.
    pub async fn call(&self, mut call: Call) -> Result<(), CallError> {
        let session = self.inner.session.borrow().clone().ok_or(CallError::NotSubscribed)?;
        call.framework_id = Some(session.framework_id.clone());
        let ct = self.inner.config.content_type;
        let (url, resp) = http_util::post(
            &self.inner.calls,
            session.endpoint,
            ct,
            None,
            encode_call(ct, &call),
            |r| {
                let r = r.header(MESOS_STREAM_ID, session.stream_id.as_str());
                with_auth(r, &self.inner.config)
            },
        )
        .await?;
        http_util::expect_status(&url, resp, StatusCode::ACCEPTED).await.map(drop)
    }

    /// ACCEPT: apply `operations` to `offer_ids`; unused resources are declined with `filters`.
    pub async fn accept(
        &self,
        offer_ids: Vec<v1::OfferId>,
        operations: Vec<v1::offer::Operation>,
        filters: Option<v1::Filters>,
    ) -> Result<(), CallError> {
        let accept = call::Accept { offer_ids, operations, filters };
        self.call(typed(call::Type::Accept, |c| c.accept = Some(accept))).await
    }

    /// DECLINE: return offers, refusing their resources for `filters.refuse_seconds` (default 5 s).
    pub async fn decline(
        &self,
        offer_ids: Vec<v1::OfferId>,
        filters: Option<v1::Filters>,
    ) -> Result<(), CallError> {
        self.call(typed(call::Type::Decline, |c| {
            c.decline = Some(call::Decline { offer_ids, filters })
        }))
        .await
    }

    /// REVIVE: clear filters and un-suppress `roles` (all roles when empty).
    pub async fn revive(&self, roles: Vec<String>) -> Result<(), CallError> {
        self.call(typed(call::Type::Revive, |c| c.revive = Some(call::Revive { roles }))).await
    }

    /// SUPPRESS: stop offers for `roles` (all roles when empty).
    pub async fn suppress(&self, roles: Vec<String>) -> Result<(), CallError> {
        self.call(typed(call::Type::Suppress, |c| c.suppress = Some(call::Suppress { roles })))
            .await
    }

    /// KILL a task, optionally with a kill policy overriding the task's.
    pub async fn kill(
        &self,
        task_id: v1::TaskId,
        agent_id: Option<v1::AgentId>,
        kill_policy: Option<v1::KillPolicy>,
    ) -> Result<(), CallError> {
        self.call(typed(call::Type::Kill, |c| {
            c.kill = Some(call::Kill { task_id, agent_id, kill_policy })
        }))
        .await
    }

    /// SHUTDOWN an executor.
    pub async fn shutdown(
        &self,
        executor_id: v1::ExecutorId,
        agent_id: v1::AgentId,
    ) -> Result<(), CallError> {
        self.call(typed(call::Type::Shutdown, |c| {
            c.shutdown = Some(call::Shutdown { executor_id, agent_id })
        }))
        .await
    }

    /// ACKNOWLEDGE a status update that carried a `uuid`. Updates without one
    /// (generated by the master) must not be acknowledged.
    pub async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<(), CallError> {
        let (Some(agent_id), Some(uuid)) = (status.agent_id.clone(), status.uuid.clone()) else {
            return Ok(());
        };
        let ack = call::Acknowledge { agent_id, task_id: status.task_id.clone(), uuid };
        self.call(typed(call::Type::Acknowledge, |c| c.acknowledge = Some(ack))).await
    }

    /// RECONCILE: explicit for the listed tasks, implicit (all tasks) when empty.
    pub async fn reconcile(
        &self,
        tasks: Vec<(v1::TaskId, Option<v1::AgentId>)>,
    ) -> Result<(), CallError> {
        let tasks = tasks
            .into_iter()
            .map(|(task_id, agent_id)| call::reconcile::Task { task_id, agent_id })
            .collect();
        self.call(typed(call::Type::Reconcile, |c| c.reconcile = Some(call::Reconcile { tasks })))
            .await
    }

    /// MESSAGE: best-effort bytes to an executor.
    pub async fn message(
        &self,
        agent_id: v1::AgentId,
        executor_id: v1::ExecutorId,
        data: Vec<u8>,
    ) -> Result<(), CallError> {
        self.call(typed(call::Type::Message, |c| {
            c.message = Some(call::Message { agent_id, executor_id, data })
        }))
        .await
    }

    /// TEARDOWN: end the framework, killing all its tasks. The driver stops
    /// once the master has closed the subscription.
    pub async fn teardown(&self) -> Result<(), CallError> {
        self.inner.stopping.send_replace(true);
        let result = self.call(typed(call::Type::Teardown, |_| {})).await;
        if result.is_err() {
            self.inner.stopping.send_replace(false);
        }
        result
    }
}

/// Encodes a call. prost alone is exact unless a map in the call holds a value equal to its
/// default (prost leaves such a value out, dropping its `required` fields); only calls that
/// carry a map value at all take the slower reflective path of [`ContentType::encode`].
fn encode_call(ct: ContentType, call: &Call) -> Vec<u8> {
    use prost::Message;
    if ct == ContentType::Protobuf && !has_map_values(call) {
        return call.encode_to_vec();
    }
    ct.encode(call)
}

/// Whether any map of the call has an entry (task and operation limits, offer filters, offer
/// constraints: the maps a scheduler call can carry).
fn has_map_values(call: &Call) -> bool {
    let task_limits = |t: &v1::TaskInfo| !t.limits.is_empty();
    let accept = call.accept.iter().flat_map(|a| a.operations.iter()).any(|op| {
        op.launch.iter().flat_map(|l| l.task_infos.iter()).any(task_limits)
            || op.launch_group.iter().flat_map(|g| g.task_group.tasks.iter()).any(task_limits)
    });
    let subscribe = call.subscribe.as_ref().is_some_and(|s| {
        !s.framework_info.offer_filters.is_empty()
            || s.offer_constraints.as_ref().is_some_and(|c| !c.role_constraints.is_empty())
    });
    accept || subscribe
}

fn typed(ty: call::Type, fill: impl FnOnce(&mut Call)) -> Call {
    let mut c = Call::default();
    c.set_type(ty);
    fill(&mut c);
    c
}

fn client(config: &Config, with_timeout: bool) -> Result<reqwest::Client, CallError> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.call_timeout)
        .tcp_nodelay(true);
    if with_timeout {
        b = b.timeout(config.call_timeout);
    } else {
        // The subscription owns its connection; never reuse it for calls.
        b = b.pool_max_idle_per_host(0);
    }
    b.build().map_err(|source| CallError::Transport { url: config.master.to_string(), source })
}

fn with_auth(req: reqwest::RequestBuilder, config: &Config) -> reqwest::RequestBuilder {
    match &config.credentials {
        Some(c) => req.basic_auth(&c.principal, Some(&c.secret)),
        None => req,
    }
}

/// How one subscription attempt ended.
enum Ended {
    /// The subscription was live and then broke.
    Lost(String),
    /// It never became live.
    Failed(String),
    /// The master could not be reached (or did not answer) at all.
    Unreachable(String),
    /// The master sent ERROR, or we tore down, or nobody listens: stop.
    Stop,
}

async fn drive(inner: Arc<Inner>, stream_client: reqwest::Client, tx: mpsc::Sender<Event>) {
    let mut framework_id = inner.config.framework.id.clone().filter(|id| !id.value.is_empty());
    let masters: Vec<Url> = std::iter::once(inner.config.master.clone())
        .chain(inner.config.other_masters.iter().cloned())
        .collect();
    let mut next_master = 0usize;
    let mut master = inner.config.master.clone();
    let mut backoff = new_backoff(&inner.config);
    loop {
        // TEARDOWN travels on the live subscription; the master then ends the
        // stream, and only after that does the driver stop.
        let ended = tokio::select! {
            ended = subscribe_once(&inner, &stream_client, &mut master, &mut framework_id, &tx) => ended,
            _ = tx.closed() => Ended::Stop,
        };
        let was_live = inner.session.send_replace(None).is_some();
        let reason = match ended {
            Ended::Stop => break,
            Ended::Lost(reason) => {
                backoff = new_backoff(&inner.config);
                reason
            }
            Ended::Unreachable(reason) => {
                // Try the next master of the list.
                next_master = (next_master + 1) % masters.len();
                master = masters[next_master].clone();
                reason
            }
            Ended::Failed(reason) => reason,
        };
        if *inner.stopping.borrow() {
            break;
        }
        let retry_in = backoff.next().unwrap_or(inner.config.max_backoff);
        tracing::warn!(%reason, ?retry_in, was_live, "scheduler subscription down");
        if tx.send(Event::Disconnected { reason, retry_in }).await.is_err() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(retry_in) => {}
            _ = tx.closed() => break,
        }
    }
    inner.session.send_replace(None);
    inner.stopped.send_replace(true);
}

fn new_backoff(config: &Config) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(config.min_backoff)
        .with_max_delay(config.max_backoff)
        .with_jitter()
        .without_max_times()
        .build()
}

async fn subscribe_once(
    inner: &Inner,
    client: &reqwest::Client,
    master: &mut Url,
    framework_id: &mut Option<FrameworkId>,
    tx: &mpsc::Sender<Event>,
) -> Ended {
    let config = &inner.config;
    let mut info = config.framework.clone();
    info.id = framework_id.clone();
    let subscribe = call::Subscribe {
        framework_info: info,
        suppressed_roles: config.suppressed_roles.clone(),
        offer_constraints: None,
    };
    let mut c = typed(call::Type::Subscribe, |c| c.subscribe = Some(subscribe));
    c.framework_id = framework_id.clone();
    let ct = config.content_type;
    let url = http_util::endpoint(master, SCHEDULER_PATH);
    let posted =
        http_util::post(client, url, ct, Some(ct), ct.encode(&c), |r| with_auth(r, config));
    let (url, resp) = match tokio::time::timeout(config.call_timeout, posted).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Ended::Unreachable(e.to_string()),
        Err(_) => {
            return Ended::Unreachable(format!(
                "SUBSCRIBE got no answer within {:?}",
                config.call_timeout
            ));
        }
    };
    // Remember where the leader is: the next attempt starts there.
    *master = url.clone();
    let resp = match http_util::expect_status(&url, resp, StatusCode::OK).await {
        Ok(resp) => resp,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    let Some(stream_id) =
        resp.headers().get(MESOS_STREAM_ID).and_then(|v| v.to_str().ok()).map(str::to_owned)
    else {
        return Ended::Failed(format!(
            "{url} answered SUBSCRIBE without a {MESOS_STREAM_ID} header"
        ));
    };
    let event_ct = http_util::response_content_type(&resp).unwrap_or(ct);
    let mut reader = RecordReader::new(resp);
    // Until SUBSCRIBED tells us the interval, wait as long as for any call.
    let mut silence_limit = config.call_timeout;
    let mut live = false;
    loop {
        let record = match tokio::time::timeout(silence_limit, reader.next()).await {
            Err(_) => {
                return lost_or_failed(
                    live,
                    format!("no event from {url} for {silence_limit:?} (heartbeats stopped)"),
                );
            }
            Ok(Err(e)) => return lost_or_failed(live, e.to_string()),
            Ok(Ok(None)) => return lost_or_failed(live, format!("{url} closed the event stream")),
            Ok(Ok(Some(record))) => record,
        };
        let event: MesosEvent = match event_ct.decode_event(&record) {
            Ok(e) => e,
            Err(e) => return lost_or_failed(live, StreamError::Decode(e).to_string()),
        };
        match event.r#type() {
            event::Type::Heartbeat => continue,
            event::Type::Subscribed => {
                let Some(sub) = event.subscribed else {
                    return Ended::Failed("SUBSCRIBED event without its payload".into());
                };
                // The master's word, bounded: a day at most, 15 s (Mesos's default) if absent.
                let heartbeat_interval = sub
                    .heartbeat_interval_seconds
                    .and_then(|s| crate::duration::from_peer_secs(s, MAX_HEARTBEAT_INTERVAL))
                    .unwrap_or(Duration::from_secs(15));
                silence_limit = heartbeat_interval.saturating_mul(config.missed_heartbeats.max(1));
                *framework_id = Some(sub.framework_id.clone());
                live = true;
                inner.session.send_replace(Some(Session {
                    framework_id: sub.framework_id.clone(),
                    stream_id: stream_id.clone(),
                    endpoint: url.clone(),
                }));
                tracing::info!(framework_id = %sub.framework_id.value, master = %url, "subscribed");
                let ev = Event::Subscribed {
                    framework_id: sub.framework_id,
                    master: url.clone(),
                    heartbeat_interval,
                    master_info: sub.master_info,
                };
                if tx.send(ev).await.is_err() {
                    return Ended::Stop;
                }
            }
            event::Type::Error => {
                let message = event.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
                tracing::error!(%message, "master ended the subscription with ERROR");
                let _ = tx.send(Event::Mesos(event)).await;
                return Ended::Stop;
            }
            _ => {
                if tx.send(Event::Mesos(event)).await.is_err() {
                    return Ended::Stop;
                }
            }
        }
    }
}

fn lost_or_failed(live: bool, reason: String) -> Ended {
    if live { Ended::Lost(reason) } else { Ended::Failed(reason) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_without_map_values_encode_as_the_reflective_path_does() {
        let ack = typed(call::Type::Acknowledge, |c| {
            c.acknowledge = Some(call::Acknowledge {
                agent_id: v1::AgentId { value: "a".into() },
                task_id: v1::TaskId { value: "t".into() },
                uuid: vec![1, 2],
            })
        });
        assert!(!has_map_values(&ack));
        assert_eq!(encode_call(ContentType::Protobuf, &ack), ContentType::Protobuf.encode(&ack));
    }

    #[test]
    fn a_zero_limit_keeps_its_required_value() {
        let task = v1::TaskInfo {
            name: "t".into(),
            limits: [("cpus".to_owned(), v1::value::Scalar { value: 0.0 })].into(),
            ..Default::default()
        };
        let launch = v1::offer::Operation {
            launch: Some(v1::offer::operation::Launch { task_infos: vec![task] }),
            ..Default::default()
        };
        let accept = typed(call::Type::Accept, |c| {
            c.accept =
                Some(call::Accept { offer_ids: vec![], operations: vec![launch], filters: None })
        });
        assert!(has_map_values(&accept));
        let bytes = encode_call(ContentType::Protobuf, &accept);
        assert_eq!(bytes, ContentType::Protobuf.encode(&accept));
        let back: Call = ContentType::Protobuf.decode(&bytes).expect("required fields present");
        assert_eq!(back.accept.unwrap().operations[0].launch.as_ref().unwrap().task_infos[0].limits["cpus"].value, 0.0);
    }
}
