//! The rolling executor upgrade, the IO around `km_scheduler_core::drain`: each term of
//! leadership looks for pods bound to executors of another configuration (their
//! `k8s.mesosphere.io/executorId` is not this scheduler's), restarts their workloads through
//! `km-restart`'s health-gated path (the replacements land on current executors, which the
//! scheduler starts beside the old ones), asks each old executor to exit once it is empty (the
//! `kamikaze` message), records an Event on each Node when it starts and ends draining, and
//! keeps `/metrics` up to date. It ends when no pod is left on an old executor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use km_scheduler_core::drain::{Drain, OldPod, Owner, Target, TargetKind};
use km_scheduler_core::task;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// How often the pods are looked at while a drain goes on.
const PERIOD: Duration = Duration::from_secs(2);

/// How long one restart may go without progress before it counts as failed.
const RESTART_TIMEOUT: Duration = Duration::from_secs(300);

/// The operator's pace.
#[derive(Clone, Debug)]
pub struct DrainSettings {
    /// Restarts at a time (0: no draining; old executors keep their pods until they end).
    pub concurrency: usize,
    /// Wait after a restart ends before the next starts.
    pub pause: Duration,
}

/// What the drain asks of the loop.
#[derive(Debug)]
pub(crate) enum DrainCall {
    /// Send `kamikaze` to an old executor: it exits once it runs no pod.
    Kamikaze { agent_id: String, executor_id: String },
}

/// Runs one term's drain until no pod is left on an old executor.
pub(crate) async fn run(
    client: kube::Client,
    current: String,
    scheduler_name: String,
    settings: DrainSettings,
    metrics: Arc<Metrics>,
    calls: mpsc::UnboundedSender<DrainCall>,
) {
    if settings.concurrency == 0 {
        return;
    }
    // Messages to executors and the replacements' launches need a subscription.
    while !metrics.subscribed() {
        tokio::time::sleep(PERIOD / 4).await;
    }
    let origin = Instant::now();
    let mut drain = Drain::new(settings.concurrency, settings.pause);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Target, bool)>();
    let mut started = false;
    loop {
        let old = match old_pods(&client, &current).await {
            Ok(old) => old,
            Err(e) => {
                tracing::warn!("executor drain: listing pods: {e} (retrying)");
                tokio::time::sleep(PERIOD).await;
                continue;
            }
        };
        let pass = drain.pass(&old, origin.elapsed());
        for (node, n) in &pass.by_node {
            metrics
                .drain_pods
                .get_or_create(&vec![("node".to_owned(), node.clone())])
                .set(gauge(*n));
        }
        for node in &pass.nodes_done {
            metrics.drain_pods.get_or_create(&vec![("node".to_owned(), node.clone())]).set(0);
        }
        metrics.drain_nodes.set(gauge(pass.by_node.len()));
        if !old.is_empty() && !started {
            started = true;
            tracing::info!(
                pods = old.len(),
                nodes = pass.by_node.len(),
                executor_id = %current,
                "executor upgrade: moving the pods of older executors, health-gated"
            );
            for s in &pass.staying {
                tracing::info!("executor upgrade: {s} stays on its executor until it ends");
            }
        }
        for (agent_id, executor_id) in pass.kamikaze {
            tracing::info!(agent = %agent_id, executor = %executor_id, "asking an older executor to exit once empty");
            let _ = calls.send(DrainCall::Kamikaze { agent_id, executor_id });
        }
        for (node, n) in &pass.nodes_started {
            let execs: Vec<&str> = {
                let mut v: Vec<&str> = old
                    .iter()
                    .filter(|p| p.node == *node)
                    .map(|p| p.executor_id.as_str())
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            let message = format!(
                "{n} pod{} on executor {} of an older configuration; moving them to executor {current}, health-gated",
                if *n == 1 { "" } else { "s" },
                execs.join(", ")
            );
            node_event(&client, &scheduler_name, node, "ExecutorDrainStarted", &message).await;
        }
        for node in &pass.nodes_done {
            let message =
                format!("no pod left on an older executor; every pod runs on executor {current}");
            node_event(&client, &scheduler_name, node, "ExecutorDrained", &message).await;
        }
        for target in pass.start {
            metrics.drain_restarts_running.inc();
            let (client, done_tx) = (client.clone(), done_tx.clone());
            tokio::spawn(async move {
                let ok = restart(&client, &target).await;
                let _ = done_tx.send((target, ok));
            });
        }
        if old.is_empty() && drain.in_flight() == 0 {
            if started {
                tracing::info!(executor_id = %current, "executor upgrade: every pod runs on a current executor");
            }
            return;
        }
        tokio::select! {
            Some((target, ok)) = done_rx.recv() => {
                metrics.drain_restarts_running.dec();
                let result = if ok { "ok" } else { "failed" };
                metrics.drain_restarts.get_or_create(&vec![("result".to_owned(), result.to_owned())]).inc();
                drain.finished(&target, ok, origin.elapsed());
            }
            () = tokio::time::sleep(PERIOD) => {}
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Restarts one target through km restart; true when every pod was replaced.
async fn restart(client: &kube::Client, target: &Target) -> bool {
    let kind = match target.kind {
        TargetKind::Deployment => km_restart::drive::Kind::Deployment,
        TargetKind::ReplicaSet => km_restart::drive::Kind::ReplicaSet,
        TargetKind::ReplicationController => km_restart::drive::Kind::ReplicationController,
        TargetKind::Pod => km_restart::drive::Kind::Pod,
    };
    let t = km_restart::Target { kind, name: target.name.clone() };
    let options = km_restart::Options {
        namespace: target.namespace.clone(),
        timeout: RESTART_TIMEOUT,
        max_unavailable: None,
        max_surge: None,
    };
    let ns = target.namespace.clone();
    let mut report = move |line: &str| tracing::info!(namespace = %ns, "executor upgrade: {line}");
    match km_restart::restart(client, &t, &options, &mut report, std::future::pending()).await {
        Ok(summary) => {
            tracing::info!(namespace = %target.namespace, "executor upgrade: {summary}");
            true
        }
        Err(e) => {
            tracing::warn!(namespace = %target.namespace, "executor upgrade: {e} (tried again later)");
            false
        }
    }
}

/// The pods bound to an executor that is not `current`, with what owns them.
async fn old_pods(client: &kube::Client, current: &str) -> Result<Vec<OldPod>, kube::Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods.list(&ListParams::default()).await?;
    let mut owners: HashMap<(String, String), Owner> = HashMap::new();
    let mut out = Vec::new();
    for p in list.items {
        let annotations = p.metadata.annotations.clone().unwrap_or_default();
        let Some(exec) = annotations.get(task::EXECUTOR_ID) else { continue };
        if exec == current || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        if node.is_empty() {
            continue;
        }
        let namespace = p.metadata.namespace.clone().unwrap_or_default();
        let controller =
            p.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true));
        let owner = match controller {
            None => Owner::Bare,
            Some(r) if r.kind == "ReplicationController" => {
                Owner::Workload(TargetKind::ReplicationController, r.name.clone())
            }
            Some(r) if r.kind == "ReplicaSet" => {
                let key = (namespace.clone(), r.name.clone());
                match owners.get(&key) {
                    Some(o) => o.clone(),
                    None => {
                        let rs = Api::<ReplicaSet>::namespaced(client.clone(), &namespace)
                            .get_opt(&r.name)
                            .await?;
                        let deployment = rs.as_ref().and_then(|rs| {
                            rs.metadata
                                .owner_references
                                .iter()
                                .flatten()
                                .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                                .map(|o| o.name.clone())
                        });
                        let o = match deployment {
                            Some(d) => Owner::Workload(TargetKind::Deployment, d),
                            None => Owner::Workload(TargetKind::ReplicaSet, r.name.clone()),
                        };
                        owners.insert(key, o.clone());
                        o
                    }
                }
            }
            Some(r) => Owner::Other(r.kind.clone()),
        };
        out.push(OldPod {
            namespace,
            name: p.metadata.name.clone().unwrap_or_default(),
            node,
            agent_id: annotations.get(task::SLAVE_ID).cloned().unwrap_or_default(),
            executor_id: exec.clone(),
            owner,
        });
    }
    Ok(out)
}

/// Records an Event on a Node (failures are logged only).
async fn node_event(
    client: &kube::Client,
    component: &str,
    node: &str,
    reason: &str,
    message: &str,
) {
    let now = Timestamp::now();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": { "name": format!("{node}.{:x}{:08x}", now.as_second(), rand::random::<u32>()), "namespace": "default" },
        "involvedObject": { "apiVersion": "v1", "kind": "Node", "name": node, "uid": node },
        "reason": reason, "message": message, "type": "Normal",
        "source": { "component": component }, "reportingComponent": component,
        "firstTimestamp": now.to_string(), "lastTimestamp": now.to_string(), "count": 1,
    });
    let Ok(event) = serde_json::from_value::<k8s_openapi::api::core::v1::Event>(event) else {
        return;
    };
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(%node, "recording event {reason}: {e}");
    }
}
