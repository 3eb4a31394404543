//! The scheduler's HTTP endpoint: `/healthz`, `/metrics`, the web page (`/`, fed by
//! `/ui/state`), the debug views and actions, and the executor binary for the agents to fetch.
//!
//! Handlers never touch the scheduler's state: they send a [`DebugCall`] to the loop and wait
//! for its answer up to `http-handler-timeout` (then 503).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// What a debug handler asks the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DebugRequest {
    /// The queue of waiting pods.
    PodQueue,
    /// Every tracked pod.
    PodStore,
    /// The task registry.
    Tasks,
    /// Reconcile explicitly now.
    Explicit,
    /// Reconcile implicitly now.
    Implicit,
    /// Ask every executor to exit once idle.
    Kamikaze,
    /// What the web page shows.
    Ui,
}

/// The loop's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DebugReply {
    /// A text view.
    Text(String),
    /// A JSON view.
    Json(serde_json::Value),
    /// The action was taken.
    Done,
    /// Actions need a live subscription.
    NotSubscribed,
}

/// A request with its reply channel.
#[derive(Debug)]
pub(crate) struct DebugCall {
    /// The request.
    pub(crate) request: DebugRequest,
    /// Where the answer goes.
    pub(crate) reply: oneshot::Sender<DebugReply>,
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    debug: mpsc::Sender<DebugCall>,
    timeout: Duration,
    kamikaze: bool,
    served: Option<(String, PathBuf)>,
}

/// The router.
pub(crate) fn router(
    metrics: Arc<Metrics>,
    debug: mpsc::Sender<DebugCall>,
    timeout: Duration,
    kamikaze: bool,
    served: Option<(String, PathBuf)>,
) -> Router {
    let state = HttpState { metrics, debug, timeout, kamikaze, served };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics_handler))
        .route("/debug/scheduler/podqueue", get(|s| ask(s, DebugRequest::PodQueue)))
        .route("/debug/scheduler/podstore", get(|s| ask(s, DebugRequest::PodStore)))
        .route("/debug/registry/tasks", get(|s| ask(s, DebugRequest::Tasks)))
        .route("/debug/actions/requestExplicit", post(|s| ask(s, DebugRequest::Explicit)))
        .route("/debug/actions/requestImplicit", post(|s| ask(s, DebugRequest::Implicit)))
        .route("/debug/actions/kamikaze", post(kamikaze_action))
        .route("/", get(web_ui))
        .route("/ui/state", get(|s| ask(s, DebugRequest::Ui)))
        .route("/{file}", get(artifact))
        .with_state(state)
}

async fn metrics_handler(State(s): State<HttpState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.encode())
        .into_response()
}

async fn ask(State(s): State<HttpState>, request: DebugRequest) -> Response {
    let (reply, rx) = oneshot::channel();
    if s.debug.send(DebugCall { request, reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the scheduler is stopping\n").into_response();
    }
    match tokio::time::timeout(s.timeout, rx).await {
        Ok(Ok(DebugReply::Text(t))) => t.into_response(),
        Ok(Ok(DebugReply::Json(v))) => axum::Json(v).into_response(),
        Ok(Ok(DebugReply::Done)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(DebugReply::NotSubscribed)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "not subscribed to a Mesos master\n").into_response()
        }
        Ok(Err(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "the scheduler is stopping\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, format!("no answer within {:?}\n", s.timeout))
            .into_response(),
    }
}

/// The web page: pending pods with the matcher's reasons, the latest placements, the offer
/// flow and the executors, from `/ui/state` (embedded in the binary; nothing from the network).
async fn web_ui() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        include_str!("ui/scheduler.html"),
    )
        .into_response()
}

async fn kamikaze_action(state: State<HttpState>) -> Response {
    if !state.kamikaze {
        return (
            StatusCode::NOT_FOUND,
            "kamikaze is disabled (start the scheduler with --enable-kamikaze)\n",
        )
            .into_response();
    }
    ask(state, DebugRequest::Kamikaze).await
}

async fn artifact(State(s): State<HttpState>, Path(file): Path<String>) -> Response {
    let Some((name, path)) = &s.served else { return StatusCode::NOT_FOUND.into_response() };
    if *name != file {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::File::open(path).await {
        Ok(f) => {
            let len = f.metadata().await.map(|m| m.len()).ok();
            let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 16));
            let mut resp = Response::new(body);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            if let Some(len) = len {
                resp.headers_mut().insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
            }
            resp
        }
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot serve the executor binary: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read {}: {e}\n", path.display()))
                .into_response()
        }
    }
}

/// What a standby (`--ha`) serves until it leads: `/healthz`, and 503 for the rest.
pub(crate) async fn serve_standby(addr: SocketAddr, interval: Duration) {
    let router =
        Router::new().route("/healthz", get(|| async { "ok (standby)" })).fallback(|| async {
            (StatusCode::SERVICE_UNAVAILABLE, "this scheduler is a standby; ask the leader\n")
        });
    let listener = bind(addr, interval).await;
    if let Err(e) = axum::serve(listener, router).await {
        tracing::warn!(%addr, "the standby endpoint stopped: {e}");
    }
}

/// Binds `addr`, retrying every `interval` while it is taken.
pub(crate) async fn bind(addr: SocketAddr, interval: Duration) -> tokio::net::TcpListener {
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => {
                tracing::warn!(%addr, "cannot listen: {e}; trying again in {interval:?}");
                tokio::time::sleep(interval).await;
            }
        }
    }
}
