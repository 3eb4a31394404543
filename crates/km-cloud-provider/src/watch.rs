//! Agent changes as they happen, from the operator API's SUBSCRIBE stream.
//!
//! The stream starts with a SUBSCRIBED snapshot and then carries
//! AGENT_ADDED and AGENT_REMOVED (among task and framework events, which
//! are skipped). Mesos has no event for an agent that disconnects or is
//! deactivated; consumers see that at their next listing. Each change (and
//! each new subscription) invalidates the provider's cache, so a listing
//! made after an event reflects it.
//!
//! The stream is re-established after any failure with a jittered
//! exponential backoff; a connection that stays silent for three heartbeat
//! intervals is considered dead. After every (re)subscription a
//! [`AgentChange::Resynced`] tells the consumer that changes may have been
//! missed and that it should list again.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use backon::BackoffBuilder;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use km_mesos::recordio;
use km_mesos::v1::master::{Call, Event, call, event};
use reqwest::Method;
use tokio::sync::mpsc;

use crate::error::CloudError;
use crate::mesos::{MesosCloud, OPERATOR_PATH, endpoint, response_content_type};

/// First delay before re-subscribing.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Largest delay before re-subscribing.
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Heartbeat intervals without any event after which the stream is dead.
const MISSED_HEARTBEATS: u32 = 3;

/// A change of the cluster's agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentChange {
    /// A subscription (re)started: changes may have been missed, list again.
    Resynced,
    /// An agent registered, or re-registered.
    Added {
        /// Its ID.
        agent_id: String,
        /// Its hostname.
        hostname: String,
    },
    /// The master removed an agent.
    Removed {
        /// Its ID.
        agent_id: String,
    },
}

/// The receiving end of a watch; a [`Stream`] of [`AgentChange`]s. It ends
/// only when the master has no operator event stream at all (a master from
/// before Mesos 1.0: SUBSCRIBE answered 404, 405 or 501), in which case
/// the consumer has to rely on polling. Dropping it stops the watch.
#[derive(Debug)]
pub struct AgentWatch {
    rx: mpsc::Receiver<AgentChange>,
    task: tokio::task::JoinHandle<()>,
}

impl AgentWatch {
    pub(crate) fn start(cloud: MesosCloud) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(run(cloud, tx));
        Self { rx, task }
    }

    /// The next change.
    pub async fn next_change(&mut self) -> Option<AgentChange> {
        self.rx.recv().await
    }
}

impl Stream for AgentWatch {
    type Item = AgentChange;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<AgentChange>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for AgentWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn new_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(MIN_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
        .build()
}

async fn run(cloud: MesosCloud, tx: mpsc::Sender<AgentChange>) {
    let mut backoff = new_backoff();
    loop {
        match follow(&cloud, &tx, &mut backoff).await {
            Ok(Ended::ConsumerGone) => return,
            Ok(Ended::ByMaster) => tracing::info!("the master closed the operator event stream"),
            Err(e) if matches!(e.status(), Some(404 | 405 | 501)) => {
                // A master from before the operator API: waiting will not
                // help. Ending the watch tells the consumer to rely on polling.
                tracing::info!(error = %e, "the master has no operator event stream; not watching");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "operator event stream failed"),
        }
        let delay = backoff.next().unwrap_or(MAX_BACKOFF);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = tx.closed() => return,
        }
    }
}

enum Ended {
    ByMaster,
    ConsumerGone,
}

/// One subscription, from SUBSCRIBE to the end of its stream.
async fn follow(
    cloud: &MesosCloud,
    tx: &mpsc::Sender<AgentChange>,
    backoff: &mut backon::ExponentialBackoff,
) -> Result<Ended, CloudError> {
    let timeout = cloud.config().http_client_timeout;
    let mut subscribe = Call::default();
    subscribe.set_type(call::Type::Subscribe);
    let body = Bytes::from(km_mesos::ContentType::Json.encode(&subscribe));
    let sent = cloud.send(cloud.stream_client(), Method::POST, OPERATOR_PATH, Some(body));
    let (url, resp) = tokio::time::timeout(timeout, sent).await.map_err(|_| {
        let url = endpoint(&cloud.config().mesos_master, OPERATOR_PATH);
        CloudError::Timeout { url: url.to_string(), after: timeout }
    })??;
    // The stream client has no overall timeout: bound reading a refusal.
    let resp = tokio::time::timeout(timeout, cloud.expect_ok(&url, resp))
        .await
        .map_err(|_| CloudError::Timeout { url: url.to_string(), after: timeout })??;
    let decode_error = |problem: String| CloudError::Decode { url: url.to_string(), problem };
    let content_type = response_content_type(&resp)
        .ok_or_else(|| decode_error("the event stream is neither JSON nor protobuf".into()))?;
    let mut body = resp.bytes_stream();
    let mut records = recordio::Decoder::default();
    // Until SUBSCRIBED arrives the master must answer like any request;
    // afterwards it sends heartbeats.
    let mut idle_limit = timeout;
    loop {
        let record = match records.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => {
                let chunk = tokio::select! {
                    chunk = tokio::time::timeout(idle_limit, body.next()) => chunk,
                    _ = tx.closed() => return Ok(Ended::ConsumerGone),
                };
                match chunk {
                    Err(_) => {
                        return Err(CloudError::Timeout {
                            url: url.to_string(),
                            after: idle_limit,
                        });
                    }
                    Ok(Some(Ok(chunk))) => {
                        records.push(&chunk);
                        continue;
                    }
                    Ok(Some(Err(e))) => return Err(cloud.transport(&url, e)),
                    Ok(None) => {
                        records.finish().map_err(|e| decode_error(e.to_string()))?;
                        return Ok(Ended::ByMaster);
                    }
                }
            }
            Err(e) => return Err(decode_error(e.to_string())),
        };
        let event: Event = content_type
            .decode_event(&record)
            .map_err(|e| decode_error(format!("not an operator event: {e}")))?;
        let change = match event.r#type() {
            event::Type::Subscribed => {
                let heartbeat = event
                    .subscribed
                    .as_ref()
                    .and_then(|s| s.heartbeat_interval_seconds)
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .unwrap_or(Duration::from_secs(15));
                idle_limit = (heartbeat * MISSED_HEARTBEATS).max(timeout);
                *backoff = new_backoff();
                tracing::debug!(%url, "subscribed to the operator event stream");
                AgentChange::Resynced
            }
            event::Type::AgentAdded => {
                let Some(added) = event.agent_added else { continue };
                let info = added.agent.agent_info;
                AgentChange::Added {
                    agent_id: info.id.map(|i| i.value).unwrap_or_default(),
                    hostname: info.hostname,
                }
            }
            event::Type::AgentRemoved => {
                let Some(removed) = event.agent_removed else { continue };
                AgentChange::Removed { agent_id: removed.agent_id.value }
            }
            _ => continue,
        };
        cloud.invalidate();
        if tx.send(change).await.is_err() {
            return Ok(Ended::ConsumerGone);
        }
    }
}
