//! The executor's HTTP endpoint: `/healthz`, `/metrics` (Prometheus text), the logs of its
//! pods' containers at `/containerLogs/{namespace}/{pod}/{container}` and commands run in them at
//! `/exec/{namespace}/{pod}/{container}` (the kubelet's paths), which the API server proxies
//! `pods/log` and `pods/exec` to. Logs and exec are served only to requests that carry the bearer
//! token of `--proxy-token-file`; without that flag they are not served at all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use km_runtime::manager::PodManager;
use km_runtime::runtime::LogOptions;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The executor's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    running: Gauge,
    starts: Counter,
    failures: Counter,
    start_latency: Histogram,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::default();
        let running = Gauge::default();
        let starts = Counter::default();
        let failures = Counter::default();
        let start_latency =
            Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]);
        registry.register("km_executor_pods_running", "Pods whose containers run", running.clone());
        registry.register("km_executor_pod_starts", "Pods launched", starts.clone());
        registry.register(
            "km_executor_pod_failures",
            "Pods that failed or could not start",
            failures.clone(),
        );
        registry.register(
            "km_executor_pod_start_latency_seconds",
            "From a pod's launch to its containers running",
            start_latency.clone(),
        );
        Metrics { registry, running, starts, failures, start_latency }
    }

    /// A pod was launched.
    pub(crate) fn start(&self) {
        self.starts.inc();
    }

    /// A pod's containers run, `after` its launch.
    pub(crate) fn running(&self, after: Duration) {
        self.running.inc();
        self.start_latency.observe(after.as_secs_f64());
    }

    /// A pod stopped running (ended or was stopped).
    pub(crate) fn not_running(&self) {
        self.running.dec();
    }

    /// A pod failed or could not start.
    pub(crate) fn failure(&self) {
        self.failures.inc();
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// What the logs endpoint reads from, and the token a caller must present.
pub(crate) struct Pods {
    pub(crate) manager: Arc<PodManager>,
    pub(crate) token: Option<String>,
}

/// Serves the endpoint; returns the address it listens on.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    pods: Pods,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                        metrics.encode(),
                    )
                        .into_response()
                }
            }),
        )
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(exec))
        .with_state(Arc::new(pods));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the executor's HTTP endpoint stopped: {e}");
        }
    });
    Ok(bound)
}

fn refuse(code: StatusCode, message: impl Into<String>) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message.into()).into_response()
}

/// Whether the request carries the configured bearer token.
fn authorized(pods: &Pods, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = &pods.token else {
        return Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            "this executor was started without --proxy-token-file: it serves no logs and no exec",
        )));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(Box::new(refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required"))),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How a log request is to be answered, from the kubelet's query parameters.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LogQuery {
    pub(crate) opts: LogOptions,
    pub(crate) limit_bytes: Option<usize>,
}

/// Parses the query of a log request; options this endpoint cannot honour are refused by name
/// rather than ignored.
pub(crate) fn log_query(q: &HashMap<String, String>) -> Result<LogQuery, String> {
    let flag = |k: &str| -> Result<bool, String> {
        match q.get(k).map(String::as_str) {
            None | Some("" | "false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(v) => Err(format!("{k}: {v:?} is not a boolean")),
        }
    };
    for unsupported in ["previous", "timestamps"] {
        if flag(unsupported)? {
            return Err(format!("{unsupported}=true is not supported by km executor"));
        }
    }
    for unsupported in ["sinceSeconds", "sinceTime"] {
        if q.contains_key(unsupported) {
            return Err(format!("{unsupported} is not supported by km executor"));
        }
    }
    let number = |k: &str| -> Result<Option<i64>, String> {
        q.get(k)
            .map(|v| v.parse::<i64>().map_err(|_| format!("{k}: {v:?} is not an integer")))
            .transpose()
    };
    let tail = match number("tailLines")? {
        None => None,
        Some(n) if n < 0 => None,
        Some(n) => Some(usize::try_from(n).map_err(|_| format!("tailLines: {n} is too large"))?),
    };
    let limit_bytes = match number("limitBytes")? {
        None => None,
        Some(n) if n <= 0 => return Err(format!("limitBytes: must be positive, got {n}")),
        Some(n) => Some(usize::try_from(n).map_err(|_| format!("limitBytes: {n} is too large"))?),
    };
    Ok(LogQuery { opts: LogOptions { tail, follow: flag("follow")? }, limit_bytes })
}

async fn container_logs(
    State(pods): State<Arc<Pods>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorized(&pods, &headers) {
        return *refused;
    }
    let q = match log_query(&query) {
        Ok(q) => q,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    let Some(uid) = pods.manager.find(&namespace, &pod) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} does not run on this executor"),
        );
    };
    let stream = match pods.manager.logs(&uid, &container, q.opts).await {
        Ok(s) => s,
        Err(km_runtime::Error::NotFound(what)) => {
            return refuse(StatusCode::NOT_FOUND, format!("{what} not found"));
        }
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // limitBytes: the stream ends once that many bytes went out.
    let mut left = q.limit_bytes.unwrap_or(usize::MAX);
    let body = stream.scan((), move |_, chunk| {
        if left == 0 {
            return futures::future::ready(None);
        }
        let chunk = chunk
            .map(|mut c| {
                c.truncate(left);
                left -= c.len();
                c
            })
            .map_err(std::io::Error::other);
        futures::future::ready(Some(chunk))
    });
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(body)).into_response()
}

/// How an exec session reaches the client.
enum Transport {
    WebSocket(crate::exec::WebSocket),
    Spdy(crate::exec::Spdy),
}

async fn exec(
    State(pods): State<Arc<Pods>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    mut request: axum::extract::Request,
) -> Response {
    if let Err(refused) = authorized(&pods, request.headers()) {
        return *refused;
    }
    let query = match crate::exec::ExecQuery::parse(request.uri().query().unwrap_or_default()) {
        Ok(q) => q,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    let headers = request.headers();
    let transport = match (
        crate::exec::WebSocket::negotiate(headers),
        crate::exec::Spdy::negotiate(headers),
    ) {
        (Some(Ok(ws)), _) => Transport::WebSocket(ws),
        (None, Some(Ok(spdy))) => Transport::Spdy(spdy),
        (Some(Err(why)), _) | (_, Some(Err(why))) => return refuse(StatusCode::BAD_REQUEST, why),
        (None, None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "exec needs the connection upgraded to a WebSocket (v5.channel.k8s.io) or to SPDY/3.1",
            );
        }
    };
    let Some(uid) = pods.manager.find(&namespace, &pod) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} does not run on this executor"),
        );
    };
    if let Err(e) = pods.manager.check_container(&uid, &container) {
        let code = match e {
            km_runtime::Error::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        return refuse(code, e.to_string());
    }
    let target = crate::exec::Target { manager: pods.manager.clone(), uid, container, query };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let response_headers = match &transport {
        Transport::WebSocket(ws) => ws.response_headers(),
        Transport::Spdy(spdy) => spdy.response_headers(),
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => match transport {
                Transport::WebSocket(ws) => ws.serve(upgraded, target).await,
                Transport::Spdy(spdy) => spdy.serve(upgraded, target).await,
            },
            Err(e) => tracing::debug!("exec: the connection was not upgraded: {e}"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().extend(response_headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn log_queries_are_parsed_and_unsupported_options_named() {
        let all = log_query(&q(&[])).expect("plain");
        assert_eq!(all.opts, LogOptions { tail: None, follow: false });
        let t = log_query(&q(&[("tailLines", "5"), ("follow", "true"), ("limitBytes", "10")]))
            .expect("tail");
        assert_eq!(t.opts, LogOptions { tail: Some(5), follow: true });
        assert_eq!(t.limit_bytes, Some(10));
        assert_eq!(log_query(&q(&[("tailLines", "-1")])).expect("all").opts.tail, None);
        let err = log_query(&q(&[("previous", "true")])).expect_err("previous");
        assert!(err.contains("previous"), "{err}");
        assert!(
            log_query(&q(&[("sinceSeconds", "10")])).expect_err("since").contains("sinceSeconds")
        );
        assert!(log_query(&q(&[("tailLines", "x")])).expect_err("bad").contains("tailLines"));
        assert!(log_query(&q(&[("limitBytes", "0")])).expect_err("zero").contains("limitBytes"));
        assert!(log_query(&q(&[("follow", "maybe")])).expect_err("bool").contains("follow"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
