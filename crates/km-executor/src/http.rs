//! The executor's HTTP endpoint: `/healthz` and `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
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

/// Serves the endpoint; returns the address it listens on.
pub(crate) async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new().route("/healthz", get(|| async { "ok" })).route(
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
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the executor's HTTP endpoint stopped: {e}");
        }
    });
    Ok(bound)
}
