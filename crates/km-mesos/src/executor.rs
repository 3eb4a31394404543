//! A client of the Mesos v1 executor API (`/api/v1/executor` on the agent).
//!
//! An executor learns where its agent is and who it is from the environment
//! the agent sets ([`ExecutorEnv`]). [`Executor::start`] spawns a driver that
//! SUBSCRIBEs and forwards events, and returns a handle for UPDATE and
//! MESSAGE calls. Reliability is the client's job, as in Mesos's own library:
//!
//! - every UPDATE gets a fresh UUID and is kept until the agent sends
//!   ACKNOWLEDGED for it; every launched task is kept until one of its
//!   updates is acknowledged. Both lists go with each (re-)SUBSCRIBE, so
//!   nothing is lost when the agent restarts.
//! - When the connection breaks and the framework checkpoints, the driver
//!   re-subscribes after a random delay of at most
//!   `MESOS_SUBSCRIPTION_BACKOFF_MAX`, and gives up (the executor should exit)
//!   once `MESOS_RECOVERY_TIMEOUT` has passed. Without checkpointing there is
//!   no agent recovery, so the driver ends at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rand::Rng as _;
use reqwest::StatusCode;
use tokio::sync::mpsc;
use tokio::time::Instant;
use url::Url;

use crate::codec::ContentType;
use crate::duration;
use crate::http_util::{self, CallError, RecordReader};
use crate::v1::executor::{Call, call, event};
use crate::v1::{self, ExecutorId, FrameworkId};

pub use crate::v1::executor::Event as MesosEvent;

/// The path of the executor endpoint on an agent.
pub const EXECUTOR_PATH: &str = "/api/v1/executor";

/// Longest wait for the agent to answer an UPDATE or MESSAGE call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the agent tells an executor through its environment (Mesos's names
/// and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutorEnv {
    /// `MESOS_AGENT_ENDPOINT`: `ip:port` of the agent.
    pub agent_endpoint: String,
    /// `MESOS_FRAMEWORK_ID`.
    pub framework_id: FrameworkId,
    /// `MESOS_EXECUTOR_ID`.
    pub executor_id: ExecutorId,
    /// `MESOS_DIRECTORY`: the sandbox on the host.
    pub directory: PathBuf,
    /// `MESOS_SANDBOX`: the sandbox as the container sees it (defaults to `directory`).
    pub sandbox: PathBuf,
    /// `MESOS_CHECKPOINT` = `1`: the agent recovers this executor after a restart.
    pub checkpoint: bool,
    /// `MESOS_RECOVERY_TIMEOUT` (default 15 mins; only with checkpointing).
    pub recovery_timeout: Duration,
    /// `MESOS_SUBSCRIPTION_BACKOFF_MAX` (default 2 secs; only with checkpointing).
    pub subscription_backoff_max: Duration,
    /// `MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD` (default 5 secs).
    pub shutdown_grace_period: Duration,
    /// `MESOS_SLAVE_ID`, if given.
    pub agent_id: Option<String>,
}

/// Defaults Mesos uses when the agent does not say otherwise.
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Default `MESOS_SUBSCRIPTION_BACKOFF_MAX`.
pub const DEFAULT_SUBSCRIPTION_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Default `MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD`.
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(5);

/// A missing or malformed environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// Required and absent (the process was not started by a Mesos agent?).
    #[error("{0} is not set; is this process running under a Mesos agent?")]
    Missing(&'static str),
    /// Present but unusable.
    #[error("{name} has an invalid value '{value}': {problem}")]
    Invalid {
        /// Variable name.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        problem: String,
    },
}

impl ExecutorEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads from any lookup function (tests, or a recorded environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let required =
            |name: &'static str| get(name).filter(|v| !v.is_empty()).ok_or(EnvError::Missing(name));
        let duration_or = |name: &'static str, default: Duration| match get(name) {
            None => Ok(default),
            Some(value) => duration::parse(&value).map_err(|e| EnvError::Invalid {
                name,
                value,
                problem: e.to_string(),
            }),
        };
        let agent_endpoint = required("MESOS_AGENT_ENDPOINT")?;
        if Url::parse(&format!("http://{agent_endpoint}"))
            .map(|u| u.host().is_none())
            .unwrap_or(true)
        {
            return Err(EnvError::Invalid {
                name: "MESOS_AGENT_ENDPOINT",
                value: agent_endpoint,
                problem: "expected ip:port".into(),
            });
        }
        let directory = PathBuf::from(required("MESOS_DIRECTORY")?);
        let checkpoint = match get("MESOS_CHECKPOINT").as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(EnvError::Invalid {
                    name: "MESOS_CHECKPOINT",
                    value: other.to_owned(),
                    problem: "expected 1 or 0".into(),
                });
            }
        };
        Ok(Self {
            framework_id: FrameworkId { value: required("MESOS_FRAMEWORK_ID")? },
            executor_id: ExecutorId { value: required("MESOS_EXECUTOR_ID")? },
            sandbox: get("MESOS_SANDBOX")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| directory.clone()),
            directory,
            checkpoint,
            recovery_timeout: duration_or("MESOS_RECOVERY_TIMEOUT", DEFAULT_RECOVERY_TIMEOUT)?,
            subscription_backoff_max: duration_or(
                "MESOS_SUBSCRIPTION_BACKOFF_MAX",
                DEFAULT_SUBSCRIPTION_BACKOFF_MAX,
            )?,
            shutdown_grace_period: duration_or(
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD",
                DEFAULT_SHUTDOWN_GRACE_PERIOD,
            )?,
            agent_id: get("MESOS_SLAVE_ID").filter(|s| !s.is_empty()),
            agent_endpoint,
        })
    }

    fn endpoint(&self) -> Url {
        // Validated in from_lookup; a hand-built env with a bad endpoint gets
        // a URL that fails at connect time with a clear error.
        Url::parse(&format!("http://{}{EXECUTOR_PATH}", self.agent_endpoint)).unwrap_or_else(|_| {
            Url::parse("http://invalid-agent-endpoint/").expect("static URL parses")
        })
    }
}

/// What the driver reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// An event from the agent: SUBSCRIBED, LAUNCH, LAUNCH_GROUP, KILL,
    /// ACKNOWLEDGED, MESSAGE, SHUTDOWN, ERROR (HEARTBEATs are consumed).
    Mesos(MesosEvent),
    /// The connection to the agent broke; with checkpointing the driver is
    /// re-subscribing, otherwise it is about to end.
    Disconnected {
        /// Why.
        reason: String,
    },
}

/// Receives the driver's events. `recv` returns `None` when the driver has
/// ended: the agent is gone for good (no checkpointing, or the recovery
/// timeout passed). The executor should then exit.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

#[derive(Debug, Default)]
struct Pending {
    /// Updates sent or to send, not yet ACKNOWLEDGED, by UUID, in order.
    updates: BTreeMap<u64, call::Update>,
    next_seq: u64,
    /// Launched tasks none of whose updates has been acknowledged yet.
    tasks: BTreeMap<String, v1::TaskInfo>,
}

#[derive(Debug)]
struct Inner {
    env: ExecutorEnv,
    content_type: ContentType,
    calls: reqwest::Client,
    pending: Mutex<Pending>,
    connected: tokio::sync::watch::Sender<bool>,
}

impl Inner {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The lock is never held across an await or a panic-prone call.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle for executor calls; cheap to clone.
#[derive(Debug, Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl Executor {
    /// Starts the driver on the current tokio runtime.
    pub fn start(
        env: ExecutorEnv,
        content_type: ContentType,
    ) -> Result<(Executor, Events), CallError> {
        let endpoint = env.endpoint();
        let build = |pool: bool| {
            let mut b = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(10))
                .tcp_nodelay(true);
            if pool {
                b = b.timeout(CALL_TIMEOUT);
            } else {
                b = b.pool_max_idle_per_host(0);
            }
            b.build().map_err(|source| CallError::Transport { url: endpoint.to_string(), source })
        };
        let calls = build(true)?;
        let stream = build(false)?;
        let (connected, _) = tokio::sync::watch::channel(false);
        let inner =
            Arc::new(Inner { env, content_type, calls, pending: Mutex::default(), connected });
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(drive(Arc::clone(&inner), stream, tx));
        Ok((Executor { inner }, Events { rx }))
    }

    /// The environment the executor runs in.
    pub fn env(&self) -> &ExecutorEnv {
        &self.inner.env
    }

    /// Sends a status update reliably. The client sets `uuid` (fresh),
    /// `source` (EXECUTOR), `executor_id` and `timestamp`; the update is kept
    /// and re-sent on re-subscription until the agent acknowledges it, so an
    /// error here only means this first attempt failed. Returns the UUID.
    pub async fn update(&self, mut status: v1::TaskStatus) -> Result<uuid::Uuid, CallError> {
        let id = uuid::Uuid::new_v4();
        status.uuid = Some(id.as_bytes().to_vec());
        status.set_source(v1::task_status::Source::Executor);
        status.executor_id = Some(self.inner.env.executor_id.clone());
        if status.timestamp.is_none() {
            status.timestamp = Some(now_epoch_secs());
        }
        let update = call::Update { status };
        {
            let mut pending = self.inner.pending();
            let seq = pending.next_seq;
            pending.next_seq += 1;
            pending.updates.insert(seq, update.clone());
        }
        let c = self.typed(call::Type::Update, |c| c.update = Some(update));
        self.post(c).await.map(|()| id)
    }

    /// Sends best-effort bytes to the scheduler.
    pub async fn message(&self, data: Vec<u8>) -> Result<(), CallError> {
        let c = self.typed(call::Type::Message, |c| c.message = Some(call::Message { data }));
        self.post(c).await
    }

    /// Updates not yet acknowledged by the agent.
    pub fn unacknowledged_updates(&self) -> Vec<v1::TaskStatus> {
        self.inner.pending().updates.values().map(|u| u.status.clone()).collect()
    }

    /// Waits until the driver has a live subscription.
    pub async fn connected(&self) {
        let mut rx = self.inner.connected.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    fn typed(&self, ty: call::Type, fill: impl FnOnce(&mut Call)) -> Call {
        let mut c = Call {
            executor_id: self.inner.env.executor_id.clone(),
            framework_id: self.inner.env.framework_id.clone(),
            ..Call::default()
        };
        c.set_type(ty);
        fill(&mut c);
        c
    }

    async fn post(&self, c: Call) -> Result<(), CallError> {
        let ct = self.inner.content_type;
        let (url, resp) = http_util::post(
            &self.inner.calls,
            self.inner.env.endpoint(),
            ct,
            None,
            ct.encode(&c),
            |r| r,
        )
        .await?;
        http_util::expect_status(&url, resp, StatusCode::ACCEPTED).await.map(drop)
    }
}

async fn drive(inner: Arc<Inner>, client: reqwest::Client, tx: mpsc::Sender<Event>) {
    let mut down_since: Option<Instant> = None;
    loop {
        // While the agent is away, an attempt may not outlive the recovery deadline.
        let deadline = down_since.map(|since| since + inner.env.recovery_timeout);
        let attempt = subscribe_once(&inner, &client, &tx, &mut down_since);
        let reason = tokio::select! {
            reason = attempt => reason,
            _ = tx.closed() => return,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => Some("re-subscription did not complete before the recovery timeout".to_owned()),
        };
        inner.connected.send_replace(false);
        let Some(reason) = reason else { return };
        let env = &inner.env;
        if !env.checkpoint {
            tracing::warn!(%reason, "lost the agent; not checkpointing, so giving up");
            let _ = tx.send(Event::Disconnected { reason }).await;
            return;
        }
        let since = *down_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= env.recovery_timeout {
            tracing::error!(%reason, timeout = ?env.recovery_timeout, "agent did not come back within the recovery timeout");
            return;
        }
        if tx.send(Event::Disconnected { reason }).await.is_err() {
            return;
        }
        let max = env.subscription_backoff_max.as_secs_f64();
        let delay = Duration::from_secs_f64(if max > 0.0 {
            rand::rng().random_range(0.0..max)
        } else {
            0.0
        });
        let deadline = since + env.recovery_timeout;
        tokio::select! {
            _ = tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))) => {}
            _ = tx.closed() => return,
        }
    }
}

/// One subscription; `None` when the driver should stop, else why it broke.
async fn subscribe_once(
    inner: &Inner,
    client: &reqwest::Client,
    tx: &mpsc::Sender<Event>,
    down_since: &mut Option<Instant>,
) -> Option<String> {
    let env = &inner.env;
    let subscribe = {
        let pending = inner.pending();
        call::Subscribe {
            unacknowledged_tasks: pending.tasks.values().cloned().collect(),
            unacknowledged_updates: pending.updates.values().cloned().collect(),
        }
    };
    let mut c = Call {
        executor_id: env.executor_id.clone(),
        framework_id: env.framework_id.clone(),
        ..Call::default()
    };
    c.set_type(call::Type::Subscribe);
    c.subscribe = Some(subscribe);
    let ct = inner.content_type;
    let (url, resp) =
        match http_util::post(client, env.endpoint(), ct, Some(ct), ct.encode(&c), |r| r).await {
            Ok(answer) => answer,
            Err(e) => return Some(e.to_string()),
        };
    let resp = match http_util::expect_status(&url, resp, StatusCode::OK).await {
        Ok(resp) => resp,
        Err(e) => return Some(e.to_string()),
    };
    let event_ct = http_util::response_content_type(&resp).unwrap_or(ct);
    let mut reader = RecordReader::new(resp);
    loop {
        let record = match reader.next().await {
            Ok(Some(record)) => record,
            Ok(None) => return Some(format!("{url} closed the event stream")),
            Err(e) => return Some(e.to_string()),
        };
        let event: MesosEvent = match event_ct.decode_event(&record) {
            Ok(e) => e,
            Err(e) => return Some(format!("undecodable event from {url}: {e}")),
        };
        match event.r#type() {
            event::Type::Heartbeat => continue,
            event::Type::Subscribed => {
                *down_since = None;
                inner.connected.send_replace(true);
                tracing::info!(agent = %url, "executor subscribed");
            }
            event::Type::Launch => {
                if let Some(launch) = &event.launch {
                    inner
                        .pending()
                        .tasks
                        .insert(launch.task.task_id.value.clone(), launch.task.clone());
                }
            }
            event::Type::LaunchGroup => {
                if let Some(group) = &event.launch_group {
                    let mut pending = inner.pending();
                    for task in &group.task_group.tasks {
                        pending.tasks.insert(task.task_id.value.clone(), task.clone());
                    }
                }
            }
            event::Type::Acknowledged => {
                if let Some(ack) = &event.acknowledged {
                    let mut pending = inner.pending();
                    pending
                        .updates
                        .retain(|_, u| u.status.uuid.as_deref() != Some(ack.uuid.as_slice()));
                    pending.tasks.remove(&ack.task_id.value);
                }
            }
            _ => {}
        }
        if tx.send(Event::Mesos(event)).await.is_err() {
            return None;
        }
    }
}

/// Seconds since the epoch, as Mesos timestamps status updates.
fn now_epoch_secs() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("MESOS_AGENT_ENDPOINT", "127.0.0.1:5051"),
        ("MESOS_FRAMEWORK_ID", "fw-0000"),
        ("MESOS_EXECUTOR_ID", "exec-1"),
        ("MESOS_DIRECTORY", "/var/sandbox"),
    ];

    #[test]
    fn defaults_follow_mesos() {
        let env = ExecutorEnv::from_lookup(lookup(BASE)).unwrap();
        assert!(!env.checkpoint);
        assert_eq!(env.recovery_timeout, Duration::from_secs(900));
        assert_eq!(env.subscription_backoff_max, Duration::from_secs(2));
        assert_eq!(env.shutdown_grace_period, Duration::from_secs(5));
        assert_eq!(env.sandbox, PathBuf::from("/var/sandbox"));
        assert_eq!(env.endpoint().as_str(), "http://127.0.0.1:5051/api/v1/executor");
    }

    #[test]
    fn reads_what_a_checkpointing_agent_sets() {
        let mut vars = BASE.to_vec();
        vars.extend([
            ("MESOS_CHECKPOINT", "1"),
            ("MESOS_RECOVERY_TIMEOUT", "1mins"),
            ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "500ms"),
            ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "10secs"),
            ("MESOS_SANDBOX", "/mnt/mesos/sandbox"),
        ]);
        let env = ExecutorEnv::from_lookup(lookup(&vars)).unwrap();
        assert!(env.checkpoint);
        assert_eq!(env.recovery_timeout, Duration::from_secs(60));
        assert_eq!(env.subscription_backoff_max, Duration::from_millis(500));
        assert_eq!(env.shutdown_grace_period, Duration::from_secs(10));
        assert_eq!(env.sandbox, PathBuf::from("/mnt/mesos/sandbox"));
    }

    #[test]
    fn bad_environment_is_named() {
        let missing = ExecutorEnv::from_lookup(lookup(&BASE[1..])).unwrap_err();
        assert_eq!(missing, EnvError::Missing("MESOS_AGENT_ENDPOINT"));
        let mut vars = BASE.to_vec();
        vars.push(("MESOS_CHECKPOINT", "true"));
        let err = ExecutorEnv::from_lookup(lookup(&vars)).unwrap_err().to_string();
        assert!(err.contains("MESOS_CHECKPOINT") && err.contains("'true'"), "{err}");
        let mut vars = BASE.to_vec();
        vars.push(("MESOS_RECOVERY_TIMEOUT", "15"));
        assert!(
            ExecutorEnv::from_lookup(lookup(&vars))
                .unwrap_err()
                .to_string()
                .contains("MESOS_RECOVERY_TIMEOUT")
        );
    }
}
