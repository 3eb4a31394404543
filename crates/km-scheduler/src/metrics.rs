//! `/metrics` in the Prometheus text format.
//!
//! The core's counters and gauges are read from a snapshot the loop publishes after each round;
//! latencies are histograms the shell fills as it sees pods queued, launched, bound and running.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use km_scheduler_core::{Gauges, Stats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What the loop publishes after each round.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    /// Counters of the core.
    pub(crate) stats: Stats,
    /// Gauges of the core.
    pub(crate) gauges: Gauges,
    /// A subscription is live.
    pub(crate) subscribed: bool,
    /// The first pod listing is complete.
    pub(crate) synced: bool,
}

#[derive(Debug, Default)]
struct Shared {
    snapshot: Snapshot,
    /// (time, pods bound so far) samples of the last seconds, for pods scheduled per second.
    bound: VecDeque<(Instant, u64)>,
}

/// The registry and the shell's own metrics.
pub(crate) struct Metrics {
    registry: Registry,
    shared: std::sync::Arc<Mutex<Shared>>,
    /// First seen by the scheduler → ACCEPT sent.
    pub(crate) queue_wait: Histogram,
    /// ACCEPT sent → the pod is bound.
    pub(crate) bind_latency: Histogram,
    /// ACCEPT sent → TASK_RUNNING received.
    pub(crate) launch_latency: Histogram,
    /// API writes that failed for good, by operation.
    pub(crate) api_errors: Family<Vec<(String, String)>, Counter>,
    /// Mesos calls that failed, by call.
    pub(crate) mesos_errors: Family<Vec<(String, String)>, Counter>,
    /// Events dropped because the API could not keep up.
    pub(crate) events_dropped: Counter,
    /// Pods on executors of an older configuration, by node.
    pub(crate) drain_pods: Family<Vec<(String, String)>, Gauge>,
    /// Nodes with pods on older executors.
    pub(crate) drain_nodes: Gauge,
    /// Drain restarts under way.
    pub(crate) drain_restarts_running: Gauge,
    /// Drain restarts ended, by result.
    pub(crate) drain_restarts: Family<Vec<(String, String)>, Counter>,
}

/// Window of the pods-scheduled-per-second gauge.
const RATE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct CoreCollector(std::sync::Arc<Mutex<Shared>>);

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

impl Collector for CoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (s, rate) = {
            let shared = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let rate = match (shared.bound.front(), shared.bound.back()) {
                (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                    (n1 - n0) as f64 / (*t1 - *t0).as_secs_f64()
                }
                _ => 0.0,
            };
            (shared.snapshot.clone(), rate)
        };
        let g = s.gauges;
        gauge(&mut enc, "km_scheduler_queue_pods", "Pods waiting to be placed", g.queued as f64)?;
        gauge(
            &mut enc,
            "km_scheduler_invalid_pods",
            "Pods whose spec cannot be scheduled",
            g.invalid as f64,
        )?;
        gauge(&mut enc, "km_scheduler_tasks", "Tasks launched and not ended", g.tasks as f64)?;
        gauge(
            &mut enc,
            "km_scheduler_offers_held",
            "Offers held while pods wait",
            g.offers as f64,
        )?;
        gauge(
            &mut enc,
            "km_scheduler_subscribed",
            "1 while subscribed to a Mesos master",
            f64::from(u8::from(s.subscribed)),
        )?;
        gauge(
            &mut enc,
            "km_scheduler_pods_synced",
            "1 once the first pod listing is complete",
            f64::from(u8::from(s.synced)),
        )?;
        gauge(
            &mut enc,
            "km_scheduler_pods_scheduled_per_second",
            "Pods bound per second over the last 10 s",
            rate,
        )?;
        let st = &s.stats;
        counter(&mut enc, "km_scheduler_offers_received", "Offers received", st.offers_received)?;
        counter(&mut enc, "km_scheduler_offers_declined", "Offers declined", st.offers_declined)?;
        counter(
            &mut enc,
            "km_scheduler_offers_used",
            "Offers consumed by ACCEPTs",
            st.offers_used,
        )?;
        counter(
            &mut enc,
            "km_scheduler_offers_rescinded",
            "Offers rescinded by the master",
            st.offers_rescinded,
        )?;
        counter(&mut enc, "km_scheduler_tasks_launched", "Tasks launched", st.tasks_launched)?;
        counter(&mut enc, "km_scheduler_pods_bound", "Pods bound to a node", st.pods_bound)?;
        counter(
            &mut enc,
            "km_scheduler_launch_failures",
            "Launches that failed before the pod was bound",
            st.launch_failures,
        )?;
        counter(
            &mut enc,
            "km_scheduler_pods_failed",
            "Pods failed because their task ended abnormally",
            st.pods_failed,
        )?;
        counter(&mut enc, "km_scheduler_kills", "Kills sent", st.kills)?;
        counter(&mut enc, "km_scheduler_plans", "Placement rounds", st.plans)?;
        {
            let family = ConstCounter::new(0u64);
            let mut m = enc.encode_descriptor(
                "km_scheduler_status_updates",
                "Task status updates received, by state",
                None,
                family.metric_type(),
            )?;
            for (state, n) in &st.updates {
                let labels = [("state", *state)];
                ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let family = ConstCounter::new(0u64);
            let mut m = enc.encode_descriptor(
                "km_scheduler_reconciliations",
                "Reconciliation requests sent, by kind",
                None,
                family.metric_type(),
            )?;
            ConstCounter::new(st.explicit_reconciliations)
                .encode(m.encode_family(&[("kind", "explicit")])?)?;
            ConstCounter::new(st.implicit_reconciliations)
                .encode(m.encode_family(&[("kind", "implicit")])?)?;
        }
        Ok(())
    }
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        300.0,
    ]
    .into_iter()
}

impl Metrics {
    /// A registry with every metric.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::default();
        let shared = std::sync::Arc::new(Mutex::new(Shared::default()));
        registry.register_collector(Box::new(CoreCollector(shared.clone())));
        let queue_wait = Histogram::new(latency_buckets());
        let bind_latency = Histogram::new(latency_buckets());
        let launch_latency = Histogram::new(latency_buckets());
        registry.register(
            "km_scheduler_queue_wait_seconds",
            "From a pod first seen to its ACCEPT",
            queue_wait.clone(),
        );
        registry.register(
            "km_scheduler_bind_latency_seconds",
            "From a pod's ACCEPT to its binding",
            bind_latency.clone(),
        );
        registry.register(
            "km_scheduler_launch_latency_seconds",
            "From a pod's ACCEPT to TASK_RUNNING",
            launch_latency.clone(),
        );
        let api_errors = Family::default();
        registry.register(
            "km_scheduler_api_errors",
            "API writes that failed, by operation",
            api_errors.clone(),
        );
        let mesos_errors = Family::default();
        registry.register(
            "km_scheduler_mesos_call_errors",
            "Mesos calls that failed, by call",
            mesos_errors.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "km_scheduler_events_dropped",
            "Events not recorded because the API fell behind",
            events_dropped.clone(),
        );
        let drain_pods = Family::default();
        registry.register(
            "km_scheduler_executor_drain_pods",
            "Pods still on executors of an older configuration, by node",
            drain_pods.clone(),
        );
        let drain_nodes = Gauge::default();
        registry.register(
            "km_scheduler_executor_drain_nodes",
            "Nodes with pods on executors of an older configuration",
            drain_nodes.clone(),
        );
        let drain_restarts_running = Gauge::default();
        registry.register(
            "km_scheduler_executor_drain_restarts_running",
            "Restarts moving pods off older executors, under way",
            drain_restarts_running.clone(),
        );
        let drain_restarts = Family::default();
        registry.register(
            "km_scheduler_executor_drain_restarts",
            "Restarts moving pods off older executors, by result",
            drain_restarts.clone(),
        );
        Metrics {
            registry,
            shared,
            queue_wait,
            bind_latency,
            launch_latency,
            api_errors,
            mesos_errors,
            events_dropped,
            drain_pods,
            drain_nodes,
            drain_restarts_running,
            drain_restarts,
        }
    }

    /// Whether the last published round was subscribed to a master.
    pub(crate) fn subscribed(&self) -> bool {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner).snapshot.subscribed
    }

    /// Publishes the state after a round of the loop.
    pub(crate) fn publish(&self, snapshot: Snapshot, now: Instant) {
        let mut shared = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let bound = snapshot.stats.pods_bound;
        if shared
            .bound
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_millis(100))
        {
            shared.bound.push_back((now, bound));
        }
        while shared.bound.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) {
            shared.bound.pop_front();
        }
        shared.snapshot = snapshot;
    }

    /// Counts a failed API write.
    pub(crate) fn api_error(&self, op: &str) {
        self.api_errors.get_or_create(&vec![("op".to_owned(), op.to_owned())]).inc();
    }

    /// Counts a failed Mesos call.
    pub(crate) fn mesos_error(&self, call: &str) {
        self.mesos_errors.get_or_create(&vec![("call".to_owned(), call.to_owned())]).inc();
    }

    /// The text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_core_numbers_and_histograms() {
        let m = Metrics::new();
        let mut s = Snapshot::default();
        s.stats.offers_received = 7;
        s.stats.updates.insert("TASK_RUNNING", 3);
        s.gauges.queued = 2;
        m.publish(s, Instant::now());
        m.queue_wait.observe(0.02);
        m.api_error("bind");
        let text = m.encode();
        assert!(text.contains("km_scheduler_offers_received_total 7"), "{text}");
        assert!(
            text.contains("km_scheduler_status_updates_total{state=\"TASK_RUNNING\"} 3"),
            "{text}"
        );
        assert!(text.contains("km_scheduler_queue_pods 2"), "{text}");
        assert!(text.contains("km_scheduler_queue_wait_seconds_bucket{le=\"0.025\"} 1"), "{text}");
        assert!(text.contains("km_scheduler_api_errors_total{op=\"bind\"} 1"), "{text}");
    }

    #[test]
    fn scheduled_per_second_over_the_window() {
        let m = Metrics::new();
        let t0 = Instant::now();
        for i in 0..=10u64 {
            let mut s = Snapshot::default();
            s.stats.pods_bound = i * 100;
            m.publish(s, t0 + Duration::from_millis(i * 500));
        }
        let text = m.encode();
        assert!(text.contains("km_scheduler_pods_scheduled_per_second 200"), "{text}");
    }
}
