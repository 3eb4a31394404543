//! The link to the master (km's `/km/v1/agent` protocol): SUBSCRIBE, read
//! the RecordIO event stream, and on any loss (EOF, error, ERROR event, no
//! event for 5 heartbeat intervals) re-subscribe with a jittered backoff
//! capped at `master_backoff_max` (15 s), carrying the agent id.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use km_mesos::ContentType;
use km_mesos::agent::{Event, event};
use km_mesos::recordio;
use rand::Rng as _;

use crate::agent::Agent;

/// The master's agent endpoint.
pub const AGENT_PATH: &str = "/km/v1/agent";

/// Heartbeat interval assumed until REGISTERED says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Keeps the agent subscribed, forever.
pub(crate) async fn run(agent: Arc<Agent>) {
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot build an HTTP client: {e}");
            return;
        }
    };
    let mut failures: u32 = 0;
    loop {
        let (registered, reason) = subscribe_once(&agent, &client).await;
        agent.disconnected();
        if registered {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let cap = Duration::from_millis(500)
            .saturating_mul(2u32.saturating_pow(failures.min(10)))
            .min(agent.cfg.master_backoff_max);
        let delay = Duration::from_secs_f64(rand::rng().random_range(0.0..=cap.as_secs_f64()));
        tracing::warn!(%reason, ?delay, "lost the master; re-subscribing");
        tokio::time::sleep(delay).await;
    }
}

/// One subscription; returns whether it got registered, and why it ended.
async fn subscribe_once(agent: &Arc<Agent>, client: &reqwest::Client) -> (bool, String) {
    let url = format!("{}{AGENT_PATH}", agent.cfg.master);
    let ct = ContentType::Protobuf;
    let call = agent.subscribe_call();
    let resp = client
        .post(&url)
        .header(http::header::CONTENT_TYPE, ct.as_str())
        .header(http::header::ACCEPT, ct.as_str())
        .body(ct.encode(&call))
        .send()
        .await;
    let resp = match resp {
        Ok(r) if r.status() == reqwest::StatusCode::OK => r,
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            return (false, format!("SUBSCRIBE answered {status}: {}", body.trim()));
        }
        Err(e) => return (false, format!("SUBSCRIBE to {url} failed: {e}")),
    };
    let event_ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| ContentType::from_content_type(v.as_bytes()))
        .unwrap_or(ct);
    let mut body = resp.bytes_stream();
    let mut decoder = recordio::Decoder::default();
    let mut heartbeat = DEFAULT_HEARTBEAT;
    let mut registered = false;
    loop {
        // Drain complete records first.
        loop {
            let record = match decoder.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return (registered, format!("bad event stream: {e}")),
            };
            let ev: Event = match event_ct.decode_event(&record) {
                Ok(ev) => ev,
                Err(e) => return (registered, format!("undecodable event: {e}")),
            };
            match ev.r#type() {
                event::Type::Registered => {
                    let Some(reg) = ev.registered else {
                        return (registered, "REGISTERED without payload".into());
                    };
                    // The master's word, bounded to a day.
                    if let Some(d) = reg.heartbeat_interval_seconds.and_then(|s| {
                        km_mesos::duration::from_peer_secs(s, Duration::from_secs(86_400))
                    }) {
                        heartbeat = d;
                    }
                    tracing::info!(agent_id = %reg.agent_id.value, master = %reg.master_info.id, "registered with the master");
                    registered = true;
                    agent.registered(reg.agent_id.value);
                }
                event::Type::Error => {
                    let message = ev.error.map(|e| e.message).unwrap_or_default();
                    return (registered, format!("master sent ERROR: {message}"));
                }
                _ if !registered => return (false, "event before REGISTERED".into()),
                _ => agent.handle_event(ev),
            }
        }
        match tokio::time::timeout(heartbeat * 5, body.next()).await {
            Err(_) => return (registered, format!("no event for {:?}", heartbeat * 5)),
            Ok(None) => return (registered, "the master closed the event stream".into()),
            Ok(Some(Err(e))) => return (registered, format!("event stream broke: {e}")),
            Ok(Some(Ok(bytes))) => decoder.push(&bytes),
        }
    }
}
