//! The Kubernetes API side: clients, the list+watch of pods and nodes, and the writes the core
//! asks for (bindings, pod phases and conditions, events, deletions, nodes).
//!
//! The watch loop is written here rather than taken from kube-runtime: the core needs exactly
//! "a full listing starts / an object / the listing is complete / a change / a deletion", and
//! kube-runtime would add a third copy of hashbrown and half a dozen other crates for it.
//! A listing is paged; a watch resumes from the last resource version seen (bookmarks included);
//! a 410 Gone, or a broken listing, starts a new listing, after which the core treats every pod
//! it knew but did not see as deleted — nothing is lost or duplicated.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use km_offer_matcher::Resource;
use km_scheduler_core::{EventType, NodeSpec, PhaseChange, PodRef, WriteResult};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::settings::Settings;

/// How long a watch request may stay open before the server ends it.
const WATCH_TIMEOUT_SECS: u32 = 240;

/// Page size of listings.
const PAGE: u32 = 500;

/// Clients for the API server: `write` with short timeouts, `watch` for long-lived requests.
#[derive(Clone)]
pub(crate) struct Kube {
    /// For reads and writes.
    pub(crate) write: kube::Client,
    /// For watches.
    pub(crate) watch: kube::Client,
}

/// Why the API server cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeError {
    /// A kubeconfig problem.
    #[error("--kubeconfig {path}: {message}")]
    Kubeconfig {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A client that cannot be built.
    #[error("API server {url}: {message}")]
    Client {
        /// URL.
        url: String,
        /// What is wrong.
        message: String,
    },
}

async fn config_for(settings: &Settings, url: Option<&str>) -> Result<kube::Config, KubeError> {
    let mut config = match &settings.kubeconfig {
        Some(path) => {
            let bad = |message: String| KubeError::Kubeconfig {
                path: path.display().to_string(),
                message,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| bad(e.to_string()))?
        }
        None => {
            let url = url.unwrap_or("http://127.0.0.1:8080");
            let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| {
                KubeError::Client { url: url.to_owned(), message: e.to_string() }
            })?;
            kube::Config::new(uri)
        }
    };
    if let (Some(url), Some(_)) = (url, &settings.kubeconfig) {
        config.cluster_url = url.parse().map_err(|e: http::uri::InvalidUri| KubeError::Client {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
    }
    config.connect_timeout = Some(Duration::from_secs(5));
    // The API server records the scheduler's writes under this name (managedFields).
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("km-scheduler/", env!("CARGO_PKG_VERSION"))),
    ));
    Ok(config)
}

impl Kube {
    /// Clients for the first API server that answers; retries (logging why) until one does.
    pub(crate) async fn connect(settings: &Settings) -> Result<Kube, KubeError> {
        let candidates: Vec<Option<String>> = if settings.api_servers.is_empty() {
            vec![None]
        } else {
            settings.api_servers.iter().cloned().map(Some).collect()
        };
        let mut delay = Duration::from_millis(200);
        loop {
            for url in &candidates {
                let mut config = config_for(settings, url.as_deref()).await?;
                let shown = config.cluster_url.to_string();
                config.read_timeout = Some(Duration::from_secs(30));
                config.write_timeout = Some(Duration::from_secs(30));
                let write = kube::Client::try_from(config.clone()).map_err(|e| {
                    KubeError::Client { url: shown.clone(), message: e.to_string() }
                })?;
                config.read_timeout = Some(Duration::from_secs(u64::from(WATCH_TIMEOUT_SECS) + 60));
                let watch = kube::Client::try_from(config).map_err(|e| KubeError::Client {
                    url: shown.clone(),
                    message: e.to_string(),
                })?;
                match write.apiserver_version().await {
                    Ok(_) => {
                        tracing::info!(url = %shown, "using the API server");
                        return Ok(Kube { write, watch });
                    }
                    Err(e) => {
                        tracing::warn!(url = %shown, "cannot reach the API server: {e}; retrying")
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// What a list+watch reports.
#[derive(Debug)]
pub(crate) enum Watched<K> {
    /// A full listing starts.
    ResyncStarted,
    /// An object was listed, added or changed.
    Applied(K),
    /// An object was deleted.
    Deleted(K),
    /// The listing is complete.
    ResyncDone,
}

/// Lists then watches `api` forever, reporting through `emit` (which returns false to stop).
pub(crate) async fn list_watch<K, F>(api: Api<K>, what: &'static str, mut emit: F)
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: AsyncFnMut(Watched<K>) -> bool,
{
    let mut delay = Duration::from_millis(100);
    'relist: loop {
        // A paged listing.
        if !emit(Watched::ResyncStarted).await {
            return;
        }
        let mut token: Option<String> = None;
        let version = loop {
            let mut lp = ListParams::default().limit(PAGE);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            match api.list(&lp).await {
                Ok(list) => {
                    delay = Duration::from_millis(100);
                    for item in list.items {
                        if !emit(Watched::Applied(item)).await {
                            return;
                        }
                    }
                    match list.metadata.continue_.filter(|c| !c.is_empty()) {
                        Some(next) => token = Some(next),
                        None => break list.metadata.resource_version.unwrap_or_default(),
                    }
                }
                Err(e) => {
                    tracing::warn!("listing {what} failed: {e}; listing again in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    continue 'relist;
                }
            }
        };
        if !emit(Watched::ResyncDone).await {
            return;
        }
        let mut version = version;
        loop {
            let wp = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
            let stream = match api.watch(&wp, &version).await {
                Ok(s) => s,
                Err(kube::Error::Api(s)) if s.code == 410 => {
                    tracing::info!("watch of {what} expired (410); listing again");
                    continue 'relist;
                }
                Err(e) => {
                    tracing::warn!("watching {what} failed: {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            let mut stream = std::pin::pin!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                        if let Some(v) = o.meta().resource_version.clone() {
                            version = v;
                        }
                        if !emit(Watched::Applied(o)).await {
                            return;
                        }
                    }
                    Ok(Some(WatchEvent::Deleted(o))) => {
                        if let Some(v) = o.meta().resource_version.clone() {
                            version = v;
                        }
                        if !emit(Watched::Deleted(o)).await {
                            return;
                        }
                    }
                    Ok(Some(WatchEvent::Bookmark(b))) => version = b.metadata.resource_version,
                    Ok(Some(WatchEvent::Error(s))) if s.code == 410 => {
                        tracing::info!("watch of {what} expired (410); listing again");
                        continue 'relist;
                    }
                    Ok(Some(WatchEvent::Error(s))) => {
                        tracing::warn!("watch of {what} reported an error: {}", s.message);
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("watch of {what} broke: {e}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                        break;
                    }
                }
            }
        }
    }
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Whether an API error is final for this write (the object is gone, replaced, or refuses it).
fn is_final(e: &kube::Error) -> bool {
    matches!(api_code(e), Some(400 | 403 | 404 | 409 | 410 | 422))
}

/// Retries a write on transient errors (connection, timeouts, 5xx, 429) until it succeeds or
/// fails for good.
async fn retrying<T, Fut: Future<Output = Result<T, kube::Error>>>(
    what: &str,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, kube::Error> {
    let mut delay = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if is_final(&e) => return Err(e),
            Err(e) => {
                tracing::warn!("{what}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// PATCHes a pod's status without decoding the pod the server sends back (the scheduler has
/// no use for it, and decoding it for every write costs more than the write).
async fn patch_pod_status<P: serde::Serialize>(
    client: &kube::Client,
    pod: &PodRef,
    patch: &Patch<P>,
) -> Result<(), kube::Error> {
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{}/pods", pod.namespace))
        .patch_subresource("status", &pod.name, &PatchParams::default(), patch)
        .map_err(kube::Error::BuildRequest)?;
    client.request_text(request).await.map(drop)
}

fn pods(client: &kube::Client, namespace: &str) -> Api<Pod> {
    Api::namespaced(client.clone(), namespace)
}

/// POSTs a Binding of the pod to `node`, carrying `annotations`.
pub(crate) async fn bind(
    client: &kube::Client,
    pod: &PodRef,
    node: &str,
    annotations: &[(String, String)],
) -> WriteResult {
    let api = pods(client, &pod.namespace);
    let annotations: BTreeMap<&str, &str> =
        annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": &*pod.name, "namespace": &*pod.namespace, "uid": &*pod.uid, "annotations": annotations },
        "target": { "apiVersion": "v1", "kind": "Node", "name": node },
    });
    let what = format!("binding {pod} to {node}");
    let pp = PostParams::default();
    let result = retrying(&what, || {
        api.create_subresource::<_, serde_json::Value>("binding", &pod.name, &pp, &binding)
    })
    .await;
    match result {
        Ok(_) => WriteResult::Ok,
        // A retried binding whose first attempt landed (its answer lost) is
        // refused as a conflict: the pod is already where it should be, with
        // this binding's task.
        Err(e) if api_code(&e) == Some(409) => {
            let task = annotations.get(km_scheduler_core::task::TASK_ID).copied();
            match api.get_opt(&pod.name).await {
                Ok(Some(p))
                    if p.metadata.uid.as_deref() == Some(&*pod.uid)
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                        && task.is_some()
                        && p.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(km_scheduler_core::task::TASK_ID))
                            .map(String::as_str)
                            == task =>
                {
                    WriteResult::Ok
                }
                _ => WriteResult::Rejected(e.to_string()),
            }
        }
        Err(e) => WriteResult::Rejected(e.to_string()),
    }
}

/// Reads the pod, lets `change` edit its status (returning false when nothing is to be done),
/// and writes it back conditional on the resource version; retries on conflicts.
async fn update_status(
    client: &kube::Client,
    pod: &PodRef,
    what: &str,
    change: impl Fn(&Pod, &mut k8s_openapi::api::core::v1::PodStatus) -> bool,
) -> Result<bool, kube::Error> {
    let api = pods(client, &pod.namespace);
    for _ in 0..10 {
        let Some(current) = retrying(what, || api.get_opt(&pod.name)).await? else {
            return Ok(false);
        };
        if current.metadata.uid.as_deref() != Some(&*pod.uid) {
            return Ok(false);
        }
        let mut status = current.status.clone().unwrap_or_default();
        if !change(&current, &mut status) {
            return Ok(false);
        }
        let patch = json!({
            "metadata": { "resourceVersion": current.metadata.resource_version },
            "status": status,
        });
        let patch = Patch::Merge(&patch);
        match retrying(what, || patch_pod_status(client, pod, &patch)).await {
            Ok(_) => return Ok(true),
            Err(e) if api_code(&e) == Some(409) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

fn now_time() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now())
}

fn set_condition(status: &mut k8s_openapi::api::core::v1::PodStatus, cond: PodCondition) -> bool {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        if c.status == cond.status && c.reason == cond.reason && c.message == cond.message {
            return false;
        }
        let transition = if c.status == cond.status {
            c.last_transition_time.clone()
        } else {
            cond.last_transition_time.clone()
        };
        *c = PodCondition { last_transition_time: transition, ..cond };
    } else {
        conditions.push(cond);
    }
    true
}

/// Writes a phase the core decided (see [`PhaseChange`] for the conditions).
///
/// Running and Succeeded are one JSON patch that tests the UID and the phase it expects
/// (Pending, resp. Running); only when that test fails — the pod moved on meanwhile, or an
/// executor wrote its own status — is the pod read and decided on.
pub(crate) async fn set_phase(
    client: &kube::Client,
    pod: &PodRef,
    change: &PhaseChange,
) -> Result<bool, kube::Error> {
    let quick = match change {
        PhaseChange::Running => Some(("Pending", "Running")),
        PhaseChange::Succeeded => Some(("Running", "Succeeded")),
        PhaseChange::Failed { .. } => None,
    };
    if let Some((from, to)) = quick {
        let mut ops = vec![
            json!({"op": "test", "path": "/metadata/uid", "value": &*pod.uid}),
            json!({"op": "test", "path": "/status/phase", "value": from}),
            json!({"op": "replace", "path": "/status/phase", "value": to}),
        ];
        if to == "Running" {
            ops.push(json!({"op": "add", "path": "/status/startTime", "value": now_time()}));
            // Nothing else reports on these pods (no executor writes their status): bound and
            // running without probes, they are scheduled and Ready, as a kubelet would say.
            let now = now_time();
            ops.push(json!({"op": "add", "path": "/status/conditions", "value": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ]}));
        }
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
            .map_err(kube::Error::SerdeError)?;
        let patch = Patch::Json::<()>(patch);
        match retrying(&format!("setting the phase of {pod}"), || {
            patch_pod_status(client, pod, &patch)
        })
        .await
        {
            Ok(_) => return Ok(true),
            Err(e) if matches!(api_code(&e), Some(404)) => return Ok(false),
            Err(e) if matches!(api_code(&e), Some(409 | 422)) => {}
            Err(e) => return Err(e),
        }
    }
    let what = format!("setting the phase of {pod}");
    update_status(client, pod, &what, |_, status| {
        let phase = status.phase.as_deref().unwrap_or("Pending");
        let ended = matches!(phase, "Succeeded" | "Failed");
        match change {
            PhaseChange::Running if phase == "Pending" => {
                status.phase = Some("Running".into());
                status.start_time.get_or_insert_with(now_time);
                // Nothing reports readiness for these tasks (no executor writes their status):
                // a running pod without probes is Ready, as a kubelet would say.
                set_condition(
                    status,
                    PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(now_time()),
                        ..Default::default()
                    },
                );
                true
            }
            PhaseChange::Succeeded if !ended => {
                status.phase = Some("Succeeded".into());
                true
            }
            PhaseChange::Failed { reason, message } if !ended => {
                status.phase = Some("Failed".into());
                status.reason = Some(reason.clone());
                status.message = Some(message.clone());
                set_condition(
                    status,
                    PodCondition {
                        type_: "Ready".into(),
                        status: "False".into(),
                        reason: Some(reason.clone()),
                        message: Some(message.clone()),
                        last_transition_time: Some(now_time()),
                        ..Default::default()
                    },
                );
                true
            }
            _ => false,
        }
    })
    .await
}

/// Sets PodScheduled=False with the reason `Unschedulable` and this message.
pub(crate) async fn unschedulable(
    client: &kube::Client,
    pod: &PodRef,
    message: &str,
) -> Result<bool, kube::Error> {
    let what = format!("reporting {pod} unschedulable");
    update_status(client, pod, &what, |current, status| {
        // A pod bound meanwhile is scheduled: an older verdict must not overwrite that.
        let bound = current
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        !bound
            && set_condition(
                status,
                PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some(message.to_owned()),
                    last_transition_time: Some(now_time()),
                    ..Default::default()
                },
            )
    })
    .await
}

/// Records an event about a pod.
pub(crate) async fn event(
    client: &kube::Client,
    component: &str,
    pod: &PodRef,
    kind: EventType,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let api: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(client.clone(), &pod.namespace);
    let now = Timestamp::now();
    let name = format!("{}.{:x}{:08x}", pod.name, now.as_second(), rand::random::<u32>());
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": { "name": name, "namespace": &*pod.namespace },
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod",
            "name": &*pod.name, "namespace": &*pod.namespace, "uid": &*pod.uid,
        },
        "reason": reason,
        "message": message,
        "type": kind.as_str(),
        "source": { "component": component },
        "reportingComponent": component,
        "firstTimestamp": now.to_string(),
        "lastTimestamp": now.to_string(),
        "count": 1,
    });
    let event: k8s_openapi::api::core::v1::Event =
        serde_json::from_value(event).map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &event).await.map(drop)
}

/// Deletes a pod at once (the end of a graceful deletion), if it still has this UID.
pub(crate) async fn delete_pod(client: &kube::Client, pod: &PodRef) -> Result<(), kube::Error> {
    let api = pods(client, &pod.namespace);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(pod.uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match retrying(&format!("deleting {pod}"), || api.delete(&pod.name, &dp)).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(api_code(&e), Some(404 | 409)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Kubernetes quantities of an agent's resources (`cpus` → cpu, `mem` → memory, `disk` →
/// ephemeral-storage, `gpus` → nvidia.com/gpu).
pub(crate) fn quantities(resources: &[Resource]) -> BTreeMap<String, Quantity> {
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for r in resources {
        if let Some(s) = r.as_scalar() {
            *sums.entry(r.name.as_ref()).or_default() += s.milli();
        }
    }
    let mut out = BTreeMap::new();
    for (name, milli) in sums {
        let (key, q) = match name {
            "cpus" if milli % 1000 == 0 => ("cpu", format!("{}", milli / 1000)),
            "cpus" => ("cpu", format!("{milli}m")),
            "mem" => ("memory", format!("{}Mi", milli / 1000)),
            "disk" => ("ephemeral-storage", format!("{}Mi", milli / 1000)),
            "gpus" => ("nvidia.com/gpu", format!("{}", milli / 1000)),
            _ => continue,
        };
        out.insert(key.to_owned(), Quantity(q));
    }
    out
}

/// Creates the Node of an agent, or updates its labels, agent ID and capacity (other labels
/// and annotations are kept).
pub(crate) async fn ensure_node(client: &kube::Client, spec: &NodeSpec) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let labels: BTreeMap<&str, &str> =
        spec.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let capacity = quantities(&spec.capacity);
    let what = format!("registering node {}", spec.name);
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": labels,
            "annotations": { km_scheduler_core::task::NODE_AGENT_ID: spec.agent_id },
        },
        "spec": { "externalID": spec.name },
    });
    let node: Node = serde_json::from_value(node).map_err(kube::Error::SerdeError)?;
    let pp = PostParams::default();
    match retrying(&what, || api.create(&pp, &node)).await {
        Ok(_) => {}
        Err(e) if api_code(&e) == Some(409) => {
            // It exists: bring labels and the agent ID up to date, keep everything else.
            let patch = json!({
                "metadata": { "labels": labels, "annotations": { km_scheduler_core::task::NODE_AGENT_ID: spec.agent_id } },
            });
            let pp = PatchParams::default();
            let patch = Patch::Merge(&patch);
            retrying(&what, || api.patch(&spec.name, &pp, &patch)).await?;
        }
        Err(e) => return Err(e),
    }
    let status = json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{ "type": "Hostname", "address": spec.name }],
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "SlaveReady",
                "message": "the Mesos agent offers resources",
                "lastHeartbeatTime": now_time(), "lastTransitionTime": now_time(),
            }],
        },
    });
    let pp = PatchParams::default();
    let status = Patch::Merge(&status);
    retrying(&what, || api.patch_status(&spec.name, &pp, &status)).await?;
    Ok(())
}

/// Records on a Node the executor started there, so a restarted scheduler rebuilds the exact
/// `ExecutorInfo`.
pub(crate) async fn record_executor(
    client: &kube::Client,
    node: &str,
    executor_id: &str,
    resources: &str,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({
        "metadata": { "annotations": {
            km_scheduler_core::task::NODE_EXECUTOR_ID: executor_id,
            km_scheduler_core::task::NODE_EXECUTOR_RESOURCES: resources,
        } },
    });
    let pp = PatchParams::default();
    let patch = Patch::Merge(&patch);
    match retrying(&format!("recording the executor on node {node}"), || {
        api.patch(node, &pp, &patch)
    })
    .await
    {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The pods API for all namespaces.
pub(crate) fn all_pods(client: &kube::Client) -> Api<Pod> {
    Api::all(client.clone())
}

/// The nodes API.
pub(crate) fn all_nodes(client: &kube::Client) -> Api<Node> {
    Api::all(client.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_kubernetes_names() {
        let q = quantities(&[
            Resource::scalar("cpus", 3.5),
            Resource::scalar("cpus", 0.5),
            Resource::scalar("mem", 16384.0),
            Resource::scalar("disk", 1000.0),
            Resource::ranges("ports", [(1, 2)]),
        ]);
        assert_eq!(q["cpu"].0, "4");
        assert_eq!(q["memory"].0, "16384Mi");
        assert_eq!(q["ephemeral-storage"].0, "1000Mi");
        assert_eq!(q.len(), 3);
        assert_eq!(quantities(&[Resource::scalar("cpus", 0.25)])["cpu"].0, "250m");
    }

    #[test]
    fn conditions_change_only_when_different() {
        let mut s = k8s_openapi::api::core::v1::PodStatus::default();
        let c = PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            message: Some("m".into()),
            ..Default::default()
        };
        assert!(set_condition(&mut s, c.clone()));
        assert!(!set_condition(&mut s, c.clone()));
        assert!(set_condition(&mut s, PodCondition { message: Some("n".into()), ..c }));
        assert_eq!(s.conditions.as_ref().map(Vec::len), Some(1));
    }
}
