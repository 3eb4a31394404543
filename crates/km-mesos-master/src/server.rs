//! HTTP endpoints and the event loop around the [`Master`] state machine.
//!
//! Handlers check what Mesos checks before state is involved (method,
//! content types, call validation, authentication) and then send a typed
//! [`Input`] to the loop. The loop owns the `Master` and every open stream;
//! it applies inputs, runs allocations (every `allocation_interval`, and at
//! once when something asked for one, coalesced), and delivers the master's
//! [`Out`] effects to the streams.

// Request checks return the ready-made error response; it is built once per
// refused request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine as _;
use km_mesos::codec::{ContentType, DecodeError};
use km_mesos::v1::master as op;
use km_mesos::v1::scheduler::{self as sched, call};
use km_mesos::{agent, recordio};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::core::{ConnId, Master, Out, Rejection};

/// Where a stream's events go.
#[derive(Debug)]
pub(crate) enum Sink {
    /// An HTTP response body.
    Http { tx: mpsc::UnboundedSender<Bytes>, content_type: ContentType },
    /// A simulated agent, by index.
    Simulated { agent: usize, tx: mpsc::UnboundedSender<(usize, agent::Event)> },
}

/// What handlers (and simulated agents) ask of the loop.
#[derive(Debug)]
pub(crate) enum Input {
    SubscribeFramework {
        subscribe: call::Subscribe,
        principal: Option<String>,
        sink: Sink,
        reply: oneshot::Sender<(ConnId, String)>,
    },
    SchedulerCall {
        call: sched::Call,
        stream_id: Option<String>,
        reply: oneshot::Sender<Result<(), Rejection>>,
    },
    SubscribeAgent {
        subscribe: agent::call::Subscribe,
        sink: Sink,
        /// The address the agent connected from (none for simulated agents).
        peer: Option<std::net::IpAddr>,
        reply: oneshot::Sender<Result<(ConnId, String), Rejection>>,
    },
    /// `host:port` of an agent's HTTP API, for the pages' sandbox views.
    AgentEndpoint {
        agent_id: String,
        reply: oneshot::Sender<Option<String>>,
    },
    AgentCall {
        call: agent::Call,
        reply: Option<oneshot::Sender<Result<(), Rejection>>>,
    },
    Operator {
        call: op::Call,
        reply: oneshot::Sender<Result<Option<op::Response>, Rejection>>,
    },
    SubscribeOperator {
        sink: Sink,
        reply: oneshot::Sender<ConnId>,
    },
    LegacyState {
        reply: oneshot::Sender<serde_json::Value>,
    },
    /// One of the other legacy JSON endpoints.
    Legacy {
        view: LegacyView,
        reply: oneshot::Sender<serde_json::Value>,
    },
    Metrics {
        reply: oneshot::Sender<serde_json::Value>,
    },
    Closed(ConnId),
}

/// Handle to the loop, shared by handlers.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) inputs: mpsc::UnboundedSender<Input>,
    /// principal → secret, when HTTP authentication is on.
    pub(crate) credentials: Option<Arc<HashMap<String, String>>>,
    /// This master's `host:port`.
    pub(crate) me: String,
    /// Who leads (always this master without `--etcd_servers`).
    pub(crate) role: tokio::sync::watch::Receiver<crate::leader::Role>,
    /// Until when this master's leadership is certain.
    pub(crate) fence: crate::leader::Fence,
    /// For the pages' views of agents (`/agents/{id}/...`).
    pub(crate) http: reqwest::Client,
}

/// For a master that does not lead: 307 to the leader (on the `/master`
/// path, as Mesos redirects), or 503 while no leader is known.
fn not_leading(shared: &Shared, path: &str) -> Option<Response> {
    match &*shared.role.borrow() {
        crate::leader::Role::Leader if shared.fence.passed(Instant::now()) => Some(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "This master could not renew its leadership in time and is stepping down",
        )),
        crate::leader::Role::Leader => None,
        crate::leader::Role::Unknown => {
            Some(text(StatusCode::SERVICE_UNAVAILABLE, "No leader elected"))
        }
        crate::leader::Role::Follower(leader) => {
            let path = if path.starts_with("/master/") || path.starts_with("/km/") {
                path.to_owned()
            } else {
                format!("/master{path}")
            };
            let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("//{leader}{path}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Some(r)
        }
    }
}

/// Loop settings.
#[derive(Debug)]
pub(crate) struct LoopConfig {
    pub(crate) allocation_interval: Duration,
    /// Where the registry is kept (`--work_dir` or etcd), if anywhere.
    pub(crate) registry: Option<crate::registry::Store>,
    pub(crate) flags: serde_json::Value,
    /// Past it, the loop stops rather than act on a leadership that may be over.
    pub(crate) fence: crate::leader::Fence,
}

/// Statistics of the allocator, for `/metrics/snapshot` and benchmarks.
#[derive(Debug, Default)]
pub(crate) struct AllocStats {
    runs: u64,
    last_run: Duration,
    total: Duration,
    offers_sent: u64,
}

/// Runs the loop until every input sender is gone, or until the registry cannot be written:
/// then it stops before announcing what the registry would hold (an agent's REGISTERED, a
/// framework's SUBSCRIBED), and the process stops with the error, so a restarted or standby
/// master takes over from the last registry that was written.
pub(crate) async fn run_loop(
    mut master: Master,
    mut inputs: mpsc::UnboundedReceiver<Input>,
    loop_tx: mpsc::UnboundedSender<Input>,
    mut config: LoopConfig,
) -> anyhow::Result<()> {
    let mut sinks: HashMap<ConnId, Sink> = HashMap::new();
    let mut next_conn: ConnId = 1;
    let mut stats = AllocStats::default();
    let mut allocation = tokio::time::interval(config.allocation_interval);
    allocation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            input = inputs.recv() => {
                let Some(input) = input else { break };
                handle(&mut master, &mut sinks, &mut next_conn, &loop_tx, &config, &stats, input);
                // Drain what else is queued: one allocation for the whole batch.
                while let Ok(input) = inputs.try_recv() {
                    handle(&mut master, &mut sinks, &mut next_conn, &loop_tx, &config, &stats, input);
                }
            }
            _ = allocation.tick() => run_allocation(&mut master, &mut stats),
            _ = ticker.tick() => master.tick(Instant::now(), SystemTime::now()),
        }
        if config.fence.passed(Instant::now()) {
            anyhow::bail!("leadership could not be renewed in time; stopping before acting on it");
        }
        if master.allocation_wanted() {
            run_allocation(&mut master, &mut stats);
        }
        // Durable before announced: a REGISTERED or SUBSCRIBED goes out only
        // once the registry holds what it announces.
        if let (Some(store), Some(registry)) = (config.registry.as_mut(), master.take_registry())
            && let Err(e) = store.persist(&registry).await
        {
            tracing::error!("cannot write the registry: {e:#}; stopping before announcing it");
            return Err(e.context("cannot write the registry"));
        }
        deliver(&mut master, &mut sinks, &mut stats);
    }
    Ok(())
}

fn run_allocation(master: &mut Master, stats: &mut AllocStats) {
    let started = std::time::Instant::now();
    master.allocate(Instant::now());
    let took = started.elapsed();
    stats.runs += 1;
    stats.last_run = took;
    stats.total += took;
}

fn handle(
    master: &mut Master,
    sinks: &mut HashMap<ConnId, Sink>,
    next_conn: &mut ConnId,
    loop_tx: &mpsc::UnboundedSender<Input>,
    config: &LoopConfig,
    stats: &AllocStats,
    input: Input,
) {
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut open = |sink: Sink, sinks: &mut HashMap<ConnId, Sink>| {
        let conn = *next_conn;
        *next_conn += 1;
        sinks.insert(conn, sink);
        conn
    };
    match input {
        Input::SubscribeFramework { subscribe, principal, sink, reply } => {
            let conn = open(sink, sinks);
            let stream_id = uuid::Uuid::new_v4().to_string();
            master.subscribe_framework(
                conn,
                stream_id.clone(),
                subscribe,
                principal.as_deref(),
                now,
                wall,
            );
            let _ = reply.send((conn, stream_id));
        }
        Input::SchedulerCall { call, stream_id, reply } => {
            let fw = call.framework_id.as_ref().map(|f| f.value.clone()).unwrap_or_default();
            let result = master
                .authorize_call(&fw, stream_id.as_deref())
                .and_then(|()| master.scheduler_call(call, now, wall));
            let _ = reply.send(result);
        }
        Input::SubscribeAgent { subscribe, sink, peer, reply } => {
            let conn = open(sink, sinks);
            match master.subscribe_agent(conn, subscribe, now, wall) {
                Ok(id) => {
                    if let Some(ip) = peer {
                        master.set_agent_ip(&id, ip);
                    }
                    let _ = reply.send(Ok((conn, id)));
                }
                Err(e) => {
                    sinks.remove(&conn);
                    let _ = reply.send(Err(e));
                }
            }
        }
        Input::AgentEndpoint { agent_id, reply } => {
            let _ = reply.send(master.agent_endpoint(&agent_id));
        }
        Input::AgentCall { call, reply } => {
            let result = master.agent_call(call, now, wall);
            if let Some(reply) = reply {
                let _ = reply.send(result);
            } else if let Err(e) = result {
                tracing::warn!(error = %e.message, "simulated agent call refused");
            }
        }
        Input::Operator { call, reply } => {
            let _ = reply.send(operator_call(master, call, now, wall));
        }
        Input::SubscribeOperator { sink, reply } => {
            let conn = open(sink, sinks);
            master.subscribe_operator(conn);
            let _ = reply.send(conn);
        }
        Input::LegacyState { reply } => {
            let _ = reply.send(master.legacy_state(&config.flags));
        }
        Input::Legacy { view, reply } => {
            let _ = reply.send(match view {
                LegacyView::Slaves => master.legacy_slaves(),
                LegacyView::Frameworks(id) => master.legacy_frameworks(id.as_deref()),
                LegacyView::Tasks(q) => master.legacy_tasks(&q),
                LegacyView::Roles => master.legacy_roles(),
                LegacyView::Flags => serde_json::json!({ "flags": config.flags }),
                LegacyView::StateSummary => {
                    let mut v = master.legacy_state_summary();
                    v["cluster"] = config.flags["cluster"].clone();
                    v
                }
            });
        }
        Input::Metrics { reply } => {
            let _ = reply.send(metrics(master, stats, crate::core::epoch_secs(wall)));
        }
        Input::Closed(conn) => {
            sinks.remove(&conn);
            master.conn_closed(conn, now, wall);
        }
    }
    let _ = loop_tx;
}

fn metrics(master: &Master, stats: &AllocStats, now_epoch: f64) -> serde_json::Value {
    let mean_ms =
        if stats.runs > 0 { stats.total.as_secs_f64() * 1e3 / stats.runs as f64 } else { 0.0 };
    let mut m = master.legacy_metrics(now_epoch);
    for (k, v) in [
        ("allocator/mesos/allocation_runs", stats.runs as f64),
        ("allocator/mesos/allocation_run_ms", stats.last_run.as_secs_f64() * 1e3),
        ("allocator/mesos/allocation_run_ms/mean", mean_ms),
        ("allocator/km/offers_sent", stats.offers_sent as f64),
    ] {
        m.insert(k.to_owned(), serde_json::json!(v));
    }
    serde_json::Value::Object(m)
}

/// The legacy endpoints beside `/master/state`.
#[derive(Debug)]
pub(crate) enum LegacyView {
    Slaves,
    Frameworks(Option<String>),
    Tasks(crate::core::TaskQuery),
    Roles,
    Flags,
    StateSummary,
}

/// A `limit` or `offset` of `/tasks`: an integer, where a negative one counts as no bound at
/// all, as with Mesos (which reads an int into a size_t): the Mesos CLI asks `limit=-1` for
/// every task.
fn count(name: &str, v: &str) -> Result<usize, String> {
    let n: i64 =
        v.trim().parse().map_err(|_| format!("Failed to parse {name}: {v:?} is not an integer"))?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Which legacy view a path names (`/master/<name>` or `/<name>`, with or without a trailing
/// slash), from its query; a bad query is a 400 with Mesos's wording.
fn legacy_view(path: &str, query: &str) -> Result<LegacyView, String> {
    let name = path.trim_end_matches('/');
    let name = name.strip_prefix("/master").unwrap_or(name);
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let param = |k: &str| params.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    Ok(match name {
        "/slaves" => LegacyView::Slaves,
        "/frameworks" => LegacyView::Frameworks(param("framework_id")),
        "/roles" => LegacyView::Roles,
        "/flags" => LegacyView::Flags,
        "/state-summary" => LegacyView::StateSummary,
        "/tasks" => {
            let mut q = crate::core::TaskQuery::default();
            if let Some(v) = param("limit") {
                q.limit = count("limit", &v)?;
            }
            if let Some(v) = param("offset") {
                q.offset = count("offset", &v)?;
            }
            if let Some(v) = param("order") {
                q.ascending = match v.as_str() {
                    "asc" => true,
                    "des" => false,
                    other => {
                        return Err(format!(
                            "Failed to parse order: {other:?} is not 'asc' or 'des'"
                        ));
                    }
                };
            }
            q.framework_id = param("framework_id");
            q.task_id = param("task_id");
            LegacyView::Tasks(q)
        }
        other => return Err(format!("no legacy endpoint {other}")),
    })
}

async fn legacy(State(shared): State<Shared>, uri: axum::http::Uri) -> Response {
    if let Some(r) = not_leading(&shared, uri.path()) {
        return r;
    }
    let view = match legacy_view(uri.path(), uri.query().unwrap_or_default()) {
        Ok(v) => v,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let (reply, answer) = oneshot::channel();
    if shared.inputs.send(Input::Legacy { view, reply }).is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
    }
    match answer.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down"),
    }
}

/// The web UI: one page, embedded in the binary, that follows the operator API's SUBSCRIBE
/// stream. A master that is not leading sends the browser to the leader's page.
async fn web_ui(
    State(shared): State<Shared>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = page_access(&shared, peer.as_deref(), &headers) {
        return r;
    }
    if let crate::leader::Role::Follower(leader) = &*shared.role.borrow() {
        let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("//{leader}/")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        crate::ui::PAGE.as_str(),
    )
        .into_response()
}

/// km has no maintenance schedule: no machine is draining or down.
async fn maintenance_status(State(shared): State<Shared>, uri: axum::http::Uri) -> Response {
    if let Some(r) = not_leading(&shared, uri.path()) {
        return r;
    }
    axum::Json(serde_json::json!({ "draining_machines": [], "down_machines": [] })).into_response()
}

pub(crate) fn operator_call(
    master: &mut Master,
    c: op::Call,
    now: Instant,
    wall: SystemTime,
) -> Result<Option<op::Response>, Rejection> {
    use op::call::Type as C;
    use op::response::Type as R;
    let mut r = op::Response::default();
    match c.r#type() {
        C::GetHealth => {
            r.set_type(R::GetHealth);
            r.get_health = Some(op::response::GetHealth { healthy: true });
        }
        C::GetVersion => {
            r.set_type(R::GetVersion);
            r.get_version = Some(op::response::GetVersion {
                version_info: km_mesos::v1::VersionInfo {
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                },
            });
        }
        C::GetState => {
            r.set_type(R::GetState);
            r.get_state = Some(master.get_state());
        }
        C::GetAgents => {
            r.set_type(R::GetAgents);
            r.get_agents = Some(master.get_agents());
        }
        C::GetFrameworks => {
            r.set_type(R::GetFrameworks);
            r.get_frameworks = Some(master.get_frameworks());
        }
        C::GetExecutors => {
            r.set_type(R::GetExecutors);
            r.get_executors = Some(master.get_executors());
        }
        C::GetTasks => {
            r.set_type(R::GetTasks);
            r.get_tasks = Some(master.get_tasks());
        }
        C::GetMaster => {
            r.set_type(R::GetMaster);
            r.get_master = Some(op::response::GetMaster {
                master_info: Some(master.master_info().clone()),
                ..Default::default()
            });
        }
        C::MarkAgentGone => {
            let id = c
                .mark_agent_gone
                .map(|m| m.agent_id.value)
                .ok_or_else(|| Rejection::new(400, "Expecting 'mark_agent_gone' to be present"))?;
            master.mark_agent_gone(&id, now, wall)?;
            return Ok(None);
        }
        C::Teardown => {
            let id = c
                .teardown
                .map(|t| t.framework_id.value)
                .ok_or_else(|| Rejection::new(400, "Expecting 'teardown' to be present"))?;
            master.operator_teardown(&id, now, wall)?;
            return Ok(None);
        }
        C::Unknown => return Err(Rejection::new(501, "Unknown call type")),
        other => {
            return Err(Rejection::new(
                501,
                format!("km mesos-master does not implement {other:?}"),
            ));
        }
    }
    Ok(Some(r))
}

pub(crate) fn deliver(
    master: &mut Master,
    sinks: &mut HashMap<ConnId, Sink>,
    stats: &mut AllocStats,
) {
    for out in master.take_outbox() {
        match out {
            Out::Scheduler(conn, event) => {
                if event.r#type() == sched::event::Type::Offers {
                    stats.offers_sent += event.offers.as_ref().map_or(0, |o| o.offers.len() as u64);
                }
                send_encoded(sinks, conn, |ct| ct.encode(&event));
            }
            Out::Operator(conn, event) => send_encoded(sinks, conn, |ct| ct.encode(&event)),
            Out::Agent(conn, event) => match sinks.get(&conn) {
                Some(Sink::Simulated { agent, tx }) => {
                    let _ = tx.send((*agent, event));
                }
                Some(Sink::Http { .. }) => send_encoded(sinks, conn, |ct| ct.encode(&event)),
                None => {}
            },
            Out::Close(conn) => {
                // Dropping the sender ends the stream once queued events are flushed.
                sinks.remove(&conn);
            }
        }
    }
}

fn send_encoded(
    sinks: &HashMap<ConnId, Sink>,
    conn: ConnId,
    encode: impl FnOnce(ContentType) -> Vec<u8>,
) {
    if let Some(Sink::Http { tx, content_type }) = sinks.get(&conn) {
        let _ = tx.send(recordio::encode(&encode(*content_type)));
    }
}

// === HTTP ===

/// The routes of `km mesos-master`.
pub(crate) fn router(shared: Shared) -> Router {
    let router = Router::new()
        .route("/api/v1/scheduler", any(scheduler))
        .route("/master/api/v1/scheduler", any(scheduler))
        .route("/api/v1", any(operator))
        .route("/master/api/v1", any(operator))
        .route("/km/v1/agent", any(agent_api))
        .route("/master/state", any(legacy_state))
        .route("/state", any(legacy_state))
        .route("/master/state.json", any(legacy_state))
        .route("/master/redirect", any(redirect))
        .route("/redirect", any(redirect))
        .route("/version", any(version))
        .route("/master/version", any(version))
        .route("/health", any(health))
        .route("/master/health", any(health))
        .route("/metrics/snapshot", any(metrics_snapshot))
        .route("/", axum::routing::get(web_ui))
        .route("/agents/{agent_id}/{*rest}", axum::routing::get(agent_view))
        .route("/master/maintenance/status", any(maintenance_status))
        .route("/maintenance/status", any(maintenance_status));
    let mut router = router;
    for name in ["slaves", "frameworks", "tasks", "roles", "flags", "state-summary"] {
        for path in [format!("/master/{name}"), format!("/{name}"), format!("/master/{name}/")] {
            router = router.route(&path, any(legacy));
        }
    }
    router.with_state(shared)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

fn rejection(r: Rejection) -> Response {
    text(StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), r.message)
}

/// The checks every POST API shares: method, content type, body decoding.
pub(crate) fn decode_call<M: prost_reflect::ReflectMessage + Default>(
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<(M, ContentType), Response> {
    if method != Method::POST {
        let mut r =
            text(StatusCode::METHOD_NOT_ALLOWED, format!("Expecting 'POST', received '{method}'"));
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Err(r);
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(text(StatusCode::BAD_REQUEST, "Expecting 'Content-Type' to be present"));
    };
    let Some(ct) = ContentType::from_content_type(ct.as_bytes()) else {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Expecting 'Content-Type' of application/json or application/x-protobuf, got '{}'",
                String::from_utf8_lossy(ct.as_bytes())
            ),
        ));
    };
    match ct.decode::<M>(body) {
        Ok(m) => Ok((m, ct)),
        Err(DecodeError::Json(e)) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("Failed to convert JSON into {what} protobuf: {e}"),
        )),
        Err(e) => {
            Err(text(StatusCode::BAD_REQUEST, format!("Failed to parse body into {what}: {e}")))
        }
    }
}

fn accept_of(headers: &HeaderMap) -> Result<ContentType, Response> {
    ContentType::negotiate(headers.get(header::ACCEPT).map(HeaderValue::as_bytes)).ok_or_else(
        || {
            text(
                StatusCode::NOT_ACCEPTABLE,
                "Expecting 'Accept' to allow application/json or application/x-protobuf",
            )
        },
    )
}

/// Whether a request came over the loopback interface.
fn from_loopback(peer: Option<&axum::extract::ConnectInfo<std::net::SocketAddr>>) -> bool {
    peer.is_some_and(|p| p.0.ip().is_loopback())
}

/// Who may see the web page and its views of the agents: anyone on this machine (loopback);
/// from elsewhere, when credentials are configured, only who the APIs would let in.
fn page_access(
    shared: &Shared,
    peer: Option<&axum::extract::ConnectInfo<std::net::SocketAddr>>,
    headers: &HeaderMap,
) -> Result<(), Response> {
    if from_loopback(peer) {
        return Ok(());
    }
    authenticate(shared, headers).map(|_| ())
}

/// Operator calls that only read (what the page asks for): from loopback they need no
/// credentials, as the web page on loopback needs no login. Everything they tell is in the
/// read-only `/master/state` too.
fn reads_only(t: op::call::Type) -> bool {
    use op::call::Type as T;
    t.as_str_name().starts_with("GET_") || matches!(t, T::Subscribe | T::ListFiles | T::ReadFile)
}

/// Basic authentication, when credentials are configured: the principal, or a 401.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Option<String>, Response> {
    let Some(creds) = &shared.credentials else { return Ok(None) };
    let unauthorized = || {
        let mut r = text(StatusCode::UNAUTHORIZED, "");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"mesos\""));
        r
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let encoded = value.strip_prefix("Basic ").ok_or_else(unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| unauthorized())?;
    let decoded = String::from_utf8(decoded).map_err(|_| unauthorized())?;
    let (principal, secret) = decoded.split_once(':').ok_or_else(unauthorized)?;
    match creds.get(principal) {
        Some(s) if s == secret => Ok(Some(principal.to_owned())),
        _ => Err(unauthorized()),
    }
}

/// Mesos's call-level validation of scheduler calls (400 when it fails).
pub(crate) fn validate_scheduler_call(c: &sched::Call) -> Result<(), String> {
    use call::Type as T;
    if c.r#type.is_none() {
        return Err("Expecting 'type' to be present".into());
    }
    let missing = |field: &str| Err(format!("Expecting '{field}' to be present"));
    match c.r#type() {
        T::Subscribe => {
            let Some(s) = &c.subscribe else { return missing("subscribe") };
            let info_id =
                s.framework_info.id.as_ref().map(|i| i.value.as_str()).filter(|v| !v.is_empty());
            let call_id =
                c.framework_id.as_ref().map(|i| i.value.as_str()).filter(|v| !v.is_empty());
            if info_id != call_id {
                return Err("'framework_id' differs from 'subscribe.framework_info.id'".into());
            }
            return Ok(());
        }
        T::Accept if c.accept.is_none() => return missing("accept"),
        T::Decline if c.decline.is_none() => return missing("decline"),
        T::Kill if c.kill.is_none() => return missing("kill"),
        T::Shutdown if c.shutdown.is_none() => return missing("shutdown"),
        T::Acknowledge => match &c.acknowledge {
            None => return missing("acknowledge"),
            Some(a) if a.uuid.len() != 16 => return Err("Not a valid UUID".into()),
            Some(_) => {}
        },
        T::Reconcile if c.reconcile.is_none() => return missing("reconcile"),
        T::Message if c.message.is_none() => return missing("message"),
        T::Request if c.request.is_none() => return missing("request"),
        T::UpdateFramework => match &c.update_framework {
            None => return missing("update_framework"),
            Some(u) => {
                let info_id = u.framework_info.id.as_ref().map(|i| i.value.as_str());
                let call_id = c.framework_id.as_ref().map(|i| i.value.as_str());
                if info_id != call_id {
                    return Err(
                        "'framework_id' differs from 'update_framework.framework_info.id'".into()
                    );
                }
            }
        },
        _ => {}
    }
    if c.framework_id.is_none() {
        return missing("framework_id");
    }
    Ok(())
}

fn stream_body(
    rx: mpsc::UnboundedReceiver<Bytes>,
    on_drop: impl FnOnce() + Send + 'static,
) -> Body {
    /// Tells the loop when the client is gone (the body is dropped).
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    let guard = Guard(Some(on_drop));
    let stream = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), (rx, guard)))
    });
    Body::from_stream(stream)
}

fn streaming(
    ct: ContentType,
    rx: mpsc::UnboundedReceiver<Bytes>,
    conn: ConnId,
    inputs: mpsc::UnboundedSender<Input>,
    stream_id: Option<&str>,
) -> Response {
    let body = stream_body(rx, move || {
        let _ = inputs.send(Input::Closed(conn));
    });
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct.as_str()));
    if let Some(id) = stream_id.and_then(|s| HeaderValue::from_str(s).ok()) {
        r.headers_mut().insert("Mesos-Stream-Id", id);
    }
    r
}

async fn scheduler(
    State(shared): State<Shared>,
    uri: axum::http::Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = match authenticate(&shared, &headers) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some(r) = not_leading(&shared, uri.path()) {
        return r;
    }
    let (c, _) = match decode_call::<sched::Call>(&method, &headers, &body, "Call") {
        Ok(x) => x,
        Err(r) => return r,
    };
    if c.r#type() == call::Type::Unknown && c.r#type.is_some() {
        return text(StatusCode::NOT_IMPLEMENTED, "Received an unexpected 'UNKNOWN' call");
    }
    if let Err(e) = validate_scheduler_call(&c) {
        return text(StatusCode::BAD_REQUEST, format!("Failed to validate scheduler::Call: {e}"));
    }
    if c.r#type() == call::Type::Subscribe {
        let ct = match accept_of(&headers) {
            Ok(ct) => ct,
            Err(r) => return r,
        };
        if headers.contains_key("Mesos-Stream-Id") {
            return text(
                StatusCode::BAD_REQUEST,
                "Subscribe calls should not include the 'Mesos-Stream-Id' header",
            );
        }
        let Some(subscribe) = c.subscribe else {
            return text(StatusCode::BAD_REQUEST, "Expecting 'subscribe' to be present");
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        let input = Input::SubscribeFramework {
            subscribe,
            principal,
            sink: Sink::Http { tx, content_type: ct },
            reply,
        };
        if shared.inputs.send(input).is_err() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
        }
        let Ok((conn, stream_id)) = answer.await else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
        };
        return streaming(ct, rx, conn, shared.inputs.clone(), Some(&stream_id));
    }
    let stream_id = headers.get("Mesos-Stream-Id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // UPDATE_FRAMEWORK is answered once applied (200); the rest are queued (202).
    let done = if c.r#type() == call::Type::UpdateFramework {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let (reply, answer) = oneshot::channel();
    if shared.inputs.send(Input::SchedulerCall { call: c, stream_id, reply }).is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
    }
    match answer.await {
        Ok(Ok(())) => done.into_response(),
        Ok(Err(r)) => rejection(r),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down"),
    }
}

async fn operator(
    State(shared): State<Shared>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    uri: axum::http::Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&shared, &headers) {
        let local_read = from_loopback(peer.as_deref())
            && !headers.contains_key(header::AUTHORIZATION)
            && decode_call::<op::Call>(&method, &headers, &body, "v1::master::Call")
                .is_ok_and(|(c, _)| c.r#type.is_some() && reads_only(c.r#type()));
        if !local_read {
            return r;
        }
    }
    if let Some(r) = not_leading(&shared, uri.path()) {
        return r;
    }
    let (c, _) = match decode_call::<op::Call>(&method, &headers, &body, "v1::master::Call") {
        Ok(x) => x,
        Err(r) => return r,
    };
    if c.r#type.is_none() {
        return text(
            StatusCode::BAD_REQUEST,
            "Failed to validate master::Call: Expecting 'type' to be present",
        );
    }
    let ct = match accept_of(&headers) {
        Ok(ct) => ct,
        Err(r) => return r,
    };
    if c.r#type() == op::call::Type::Subscribe {
        let (tx, rx) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        if shared
            .inputs
            .send(Input::SubscribeOperator { sink: Sink::Http { tx, content_type: ct }, reply })
            .is_err()
        {
            return text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
        }
        let Ok(conn) = answer.await else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
        };
        return streaming(ct, rx, conn, shared.inputs.clone(), None);
    }
    let (reply, answer) = oneshot::channel();
    if shared.inputs.send(Input::Operator { call: c, reply }).is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
    }
    match answer.await {
        Ok(Ok(Some(resp))) => {
            ([(header::CONTENT_TYPE, ct.as_str())], ct.encode(&resp)).into_response()
        }
        Ok(Ok(None)) => StatusCode::ACCEPTED.into_response(),
        Ok(Err(r)) => rejection(r),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down"),
    }
}

async fn agent_api(
    State(shared): State<Shared>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    uri: axum::http::Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = not_leading(&shared, uri.path()) {
        return r;
    }
    let (c, _) = match decode_call::<agent::Call>(&method, &headers, &body, "km.v1.agent.Call") {
        Ok(x) => x,
        Err(r) => return r,
    };
    if c.r#type.is_none() {
        return text(StatusCode::BAD_REQUEST, "Expecting 'type' to be present");
    }
    if c.r#type() == agent::call::Type::Subscribe {
        let ct = match accept_of(&headers) {
            Ok(ct) => ct,
            Err(r) => return r,
        };
        let Some(subscribe) = c.subscribe else {
            return text(StatusCode::BAD_REQUEST, "Expecting 'subscribe' to be present");
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        if shared
            .inputs
            .send(Input::SubscribeAgent {
                subscribe,
                sink: Sink::Http { tx, content_type: ct },
                peer: peer.map(|p| p.0.0.ip()),
                reply,
            })
            .is_err()
        {
            return text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
        }
        return match answer.await {
            Ok(Ok((conn, _))) => streaming(ct, rx, conn, shared.inputs.clone(), None),
            Ok(Err(r)) => rejection(r),
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down"),
        };
    }
    if c.agent_id.is_none() {
        return text(StatusCode::BAD_REQUEST, "Expecting 'agent_id' to be present");
    }
    let (reply, answer) = oneshot::channel();
    if shared.inputs.send(Input::AgentCall { call: c, reply: Some(reply) }).is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
    }
    match answer.await {
        Ok(Ok(())) => StatusCode::ACCEPTED.into_response(),
        Ok(Err(r)) => rejection(r),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down"),
    }
}

/// What of an agent the master's page may read through the master (same origin, same access
/// as the page): its `/state` and `/flags`, and its sandbox files API, which confines every
/// path to the sandboxes.
const AGENT_VIEWS: [&str; 4] = ["state", "flags", "files/browse", "files/read"];

/// `GET /agents/{agent_id}/{state | flags | files/browse | files/read}`: the agent's own
/// answer, fetched from where it registered from.
async fn agent_view(
    State(shared): State<Shared>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    axum::extract::Path((agent_id, rest)): axum::extract::Path<(String, String)>,
    uri: axum::http::Uri,
) -> Response {
    if let Err(r) = page_access(&shared, peer.as_deref(), &headers) {
        return r;
    }
    if let Some(r) = not_leading(&shared, uri.path()) {
        return r;
    }
    if !AGENT_VIEWS.contains(&rest.as_str()) {
        return text(
            StatusCode::NOT_FOUND,
            format!("/agents/{{id}}/ serves {} only", AGENT_VIEWS.join(", ")),
        );
    }
    let (reply, answer) = oneshot::channel();
    if shared.inputs.send(Input::AgentEndpoint { agent_id: agent_id.clone(), reply }).is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
    }
    let Ok(Some(endpoint)) = answer.await else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "No agent {agent_id} with an HTTP address is registered (simulated agents have none)"
            ),
        );
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("http://{endpoint}/{rest}{query}");
    let unreachable = |e: reqwest::Error| {
        text(StatusCode::BAD_GATEWAY, format!("Agent {agent_id} at {endpoint} did not answer: {e}"))
    };
    let resp = match shared.http.get(&url).send().await {
        Ok(r) => r,
        Err(e) => return unreachable(e),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return unreachable(e),
    };
    let mut r = (status, body).into_response();
    if let Some(ct) = content_type {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r
}

async fn legacy_state(State(shared): State<Shared>, uri: axum::http::Uri) -> Response {
    if let Some(r) = not_leading(&shared, uri.path()) {
        return r;
    }
    let (reply, answer) = oneshot::channel();
    if shared.inputs.send(Input::LegacyState { reply }).is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
    }
    match answer.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down"),
    }
}

async fn metrics_snapshot(State(shared): State<Shared>) -> Response {
    let (reply, answer) = oneshot::channel();
    if shared.inputs.send(Input::Metrics { reply }).is_err() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down");
    }
    match answer.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "Master is shutting down"),
    }
}

async fn redirect(State(shared): State<Shared>) -> Response {
    let leader = match &*shared.role.borrow() {
        crate::leader::Role::Leader => shared.me.clone(),
        crate::leader::Role::Follower(l) => l.clone(),
        crate::leader::Role::Unknown => {
            return text(StatusCode::SERVICE_UNAVAILABLE, "No leader elected");
        }
    };
    let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("//{leader}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn version() -> Response {
    axum::Json(serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "build_user": "km", "git_sha": ""})).into_response()
}

async fn health() -> Response {
    StatusCode::OK.into_response()
}

/// Parses a Mesos credentials file: JSON `{"credentials":[{"principal":…,"secret":…}]}`
/// or text lines `principal secret`.
pub(crate) fn parse_credentials(content: &str) -> Result<BTreeMap<String, String>, String> {
    let trimmed = content.trim_start();
    let mut out = BTreeMap::new();
    if trimmed.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(trimmed).map_err(|e| format!("invalid JSON: {e}"))?;
        let list = v
            .get("credentials")
            .and_then(|c| c.as_array())
            .ok_or("expected a 'credentials' array")?;
        for c in list {
            let p = c
                .get("principal")
                .and_then(|x| x.as_str())
                .ok_or("a credential lacks 'principal'")?;
            let s =
                c.get("secret").and_then(|x| x.as_str()).ok_or("a credential lacks 'secret'")?;
            out.insert(p.to_owned(), s.to_owned());
        }
    } else {
        for (n, line) in content.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(p), Some(s), None) => {
                    out.insert(p.to_owned(), s.to_owned());
                }
                _ => return Err(format!("line {}: expected 'principal secret'", n + 1)),
            }
        }
    }
    Ok(out)
}
