//! Prometheus metrics at `/metrics`, under kube-apiserver's names: requests by verb, resource
//! and code with their latency, open watches, and the latency of every etcd operation
//! ([`Timed`] wraps the store).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::storage::{Kv, ListResult, Result, Storage, WatchStream};

/// What a request was: kube-apiserver's labels.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `DELETE`, `DELETECOLLECTION`.
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    /// `cluster`, `namespace` or `resource`.
    pub scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EtcdLabels {
    operation: String,
    /// The resource whose keys were touched (`pods`, …).
    r#type: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<CodeLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
    longrunning: Family<RequestLabels, Gauge>,
    etcd: Family<EtcdLabels, Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<CodeLabels, Counter>::default();
        let durations = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0])
        });
        let longrunning = Family::<RequestLabels, Gauge>::default();
        let etcd = Family::<EtcdLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0])
        });
        // prometheus-client adds `_total` to counters.
        registry.register(
            "apiserver_request",
            "Requests by verb, group, version, resource, subresource, scope and HTTP code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Time to answer a request (for a watch: to start its stream)",
            durations.clone(),
        );
        registry.register(
            "apiserver_longrunning_requests",
            "Requests in progress that last (watches)",
            longrunning.clone(),
        );
        registry.register(
            "etcd_request_duration_seconds",
            "Time of each etcd operation, by operation and resource",
            etcd.clone(),
        );
        Metrics { registry, requests, durations, longrunning, etcd }
    }

    /// Counts one answered request.
    pub fn request(&self, labels: &RequestLabels, code: u16, started: Instant) {
        let with_code = CodeLabels {
            verb: labels.verb.clone(),
            group: labels.group.clone(),
            version: labels.version.clone(),
            resource: labels.resource.clone(),
            subresource: labels.subresource.clone(),
            scope: labels.scope.clone(),
            code: code.to_string(),
        };
        self.requests.get_or_create(&with_code).inc();
        self.durations.get_or_create(labels).observe(started.elapsed().as_secs_f64());
    }

    /// Counts a watch open until the returned guard is dropped.
    pub fn longrunning(self: &Arc<Self>, labels: RequestLabels) -> Longrunning {
        self.longrunning.get_or_create(&labels).inc();
        Longrunning { metrics: Arc::clone(self), labels }
    }

    fn etcd(&self, operation: &str, key: &str, started: Instant) {
        let labels = EtcdLabels { operation: operation.to_owned(), r#type: resource_of(key) };
        self.etcd.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("cannot encode the metrics: {e}");
            out.clear();
        }
        out
    }
}

/// An open watch, counted in `apiserver_longrunning_requests` while it lives.
#[derive(Debug)]
pub struct Longrunning {
    metrics: Arc<Metrics>,
    labels: RequestLabels,
}

impl Drop for Longrunning {
    fn drop(&mut self) {
        self.metrics.longrunning.get_or_create(&self.labels).dec();
    }
}

/// `pods` of `/registry/pods/default/p`.
fn resource_of(key: &str) -> String {
    key.strip_prefix("/registry/").and_then(|k| k.split('/').next()).unwrap_or_default().to_owned()
}

/// A store whose every operation is timed into `etcd_request_duration_seconds`.
pub struct Timed<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Timed<S> {
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Timed<S> {
        Timed { inner, metrics }
    }

    async fn time<T>(&self, op: &str, key: &str, f: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = f.await;
        self.metrics.etcd(op, key, started);
        out
    }
}

impl<S: Storage> Storage for Timed<S> {
    async fn get(&self, key: &str) -> Result<Option<Kv>> {
        self.time("get", key, self.inner.get(key)).await
    }

    async fn get_for_update(&self, key: &str) -> Result<Option<Kv>> {
        self.time("get", key, self.inner.get_for_update(key)).await
    }

    async fn create(&self, key: &str, value: Bytes, parent: Option<&str>) -> Result<i64> {
        self.time("create", key, self.inner.create(key, value, parent)).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: i64) -> Result<i64> {
        self.time("update", key, self.inner.update(key, value, expected)).await
    }

    async fn delete(&self, key: &str, expected: Option<i64>) -> Result<(i64, Kv)> {
        self.time("delete", key, self.inner.delete(key, expected)).await
    }

    async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        revision: i64,
        limit: i64,
    ) -> Result<ListResult> {
        self.time("list", prefix, self.inner.list(prefix, start, revision, limit)).await
    }

    async fn current_revision(&self) -> Result<i64> {
        self.time("revision", "", self.inner.current_revision()).await
    }

    async fn watch(&self, prefix: &str, from: i64) -> Result<WatchStream> {
        self.time("watch", prefix, self.inner.watch(prefix, from)).await
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.time("compact", "", self.inner.compact(revision)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    #[tokio::test]
    async fn requests_watches_and_store_operations_are_counted() {
        let metrics = Arc::new(Metrics::new());
        let store = Timed::new(MemoryStorage::default(), Arc::clone(&metrics));
        store.create("/registry/pods/default/p", Bytes::from_static(b"{}"), None).await.unwrap();
        let _ = store.get("/registry/pods/default/p").await.unwrap();
        let labels = RequestLabels {
            verb: "LIST".into(),
            version: "v1".into(),
            resource: "pods".into(),
            scope: "namespace".into(),
            ..Default::default()
        };
        metrics.request(&labels, 200, Instant::now());
        metrics.request(&labels, 200, Instant::now());
        let watch = RequestLabels { verb: "WATCH".into(), ..labels.clone() };
        let open = metrics.longrunning(watch);
        let text = metrics.encode();
        assert!(
            text.contains(
                "apiserver_request_total{verb=\"LIST\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",scope=\"namespace\",code=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("apiserver_request_duration_seconds_count{verb=\"LIST\""), "{text}");
        assert!(text.contains("apiserver_longrunning_requests{verb=\"WATCH\""), "{text}");
        assert!(
            text.contains(
                "etcd_request_duration_seconds_count{operation=\"create\",type=\"pods\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("etcd_request_duration_seconds_count{operation=\"get\",type=\"pods\"} 1")
        );
        drop(open);
        assert!(metrics.encode().contains("apiserver_longrunning_requests{verb=\"WATCH\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",scope=\"namespace\"} 0"));
    }
}
