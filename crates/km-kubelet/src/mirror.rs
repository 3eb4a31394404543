//! Publishing to an API server (`--api-servers`): a mirror pod for every
//! static pod, its status kept in sync, and the kubelet's Node object with
//! a periodic heartbeat.
//!
//! The main loop publishes the static pods it runs (with their current
//! status) on a watch channel; [`run`] reconciles the API server with them
//! every second: it creates missing mirror pods (also ones someone deleted),
//! replaces mirror pods of an older manifest, deletes mirror pods of this
//! node whose static pod is gone, and patches `pods/status` when the status
//! changed. Failures are retried on the next round and logged once per
//! change; the pods keep running regardless.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tokio::sync::watch;

use crate::source::{ANNOTATION_CONFIG_HASH, ANNOTATION_CONFIG_SOURCE};

/// Annotation marking a mirror pod; its value is the static pod's config hash.
pub const ANNOTATION_CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

/// Image put on mirror-pod containers that have none (native containers run
/// host binaries; the API server requires an image).
pub const NATIVE_IMAGE_PLACEHOLDER: &str = "km.io/native";

/// How often the Node's status is renewed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Errors talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// An `--api-servers` entry that is not a URL.
    #[error("--api-servers {url:?}: {message}")]
    BadUrl { url: String, message: String },
    /// A request failed.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// A `--kubeconfig` that cannot be used.
    #[error("--kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    /// The Node does not exist and this process does not create it.
    #[error("node {0} does not exist (it is registered by km scheduler or km controller-manager)")]
    NoNode(String),
}

/// A kube-rs client per `--api-servers` URL (short timeouts), with the credentials and
/// certificate authority of `kubeconfig` when given (its current context; the URLs replace its
/// server). Must be called within a tokio runtime.
pub async fn clients(
    urls: &[String],
    kubeconfig: Option<&std::path::Path>,
) -> Result<Vec<kube::Client>, MirrorError> {
    let base = match kubeconfig {
        Some(path) => {
            let bad = |message: String| MirrorError::Kubeconfig {
                path: path.display().to_string(),
                message,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            let options = kube::config::KubeConfigOptions::default();
            Some(
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| bad(e.to_string()))?,
            )
        }
        None => None,
    };
    urls.iter()
        .map(|url| {
            let bad = |message: String| MirrorError::BadUrl { url: url.clone(), message };
            let uri: http::Uri =
                url.parse().map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
            let mut config = match &base {
                Some(base) => {
                    let mut c = base.clone();
                    c.cluster_url = uri;
                    c
                }
                None => kube::Config::new(uri),
            };
            // A silent server must not hold up pod starts for minutes.
            config.connect_timeout = Some(Duration::from_secs(5));
            config.read_timeout = Some(Duration::from_secs(15));
            config.write_timeout = Some(Duration::from_secs(15));
            config.headers.push((
                http::header::USER_AGENT,
                http::HeaderValue::from_static(concat!("km-kubelet/", env!("CARGO_PKG_VERSION"))),
            ));
            kube::Client::try_from(config).map_err(|e| bad(e.to_string()))
        })
        .collect()
}

/// The mirror pod of a static pod: same spec and labels, no uid or status,
/// the mirror annotation set to the config hash, bound to `node`.
pub fn mirror_pod(static_pod: &k8s::Pod, node: &str) -> k8s::Pod {
    let mut pod = static_pod.clone();
    let hash = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CONFIG_HASH).cloned())
        .or_else(|| pod.metadata.uid.clone())
        .unwrap_or_default();
    pod.metadata.uid = None;
    pod.metadata.resource_version = None;
    pod.metadata.creation_timestamp = None;
    pod.metadata.managed_fields = None;
    let ann = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(ANNOTATION_CONFIG_MIRROR.into(), hash.clone());
    ann.insert(ANNOTATION_CONFIG_HASH.into(), hash);
    ann.insert(ANNOTATION_CONFIG_SOURCE.into(), "file".into());
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node.to_owned());
        for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
                c.image = Some(NATIVE_IMAGE_PLACEHOLDER.into());
            }
        }
    }
    pod.status = None;
    pod
}

/// A JSON merge patch that makes a pod's status `status`: fields it lacks
/// are nulled, so nothing of an earlier status lingers.
pub fn status_patch(status: &k8s::PodStatus) -> serde_json::Value {
    const FIELDS: [&str; 13] = [
        "conditions",
        "containerStatuses",
        "ephemeralContainerStatuses",
        "hostIP",
        "hostIPs",
        "initContainerStatuses",
        "message",
        "nominatedNodeName",
        "phase",
        "podIP",
        "podIPs",
        "reason",
        "startTime",
    ];
    let mut v = serde_json::to_value(status).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(obj) = v.as_object_mut() {
        for f in FIELDS {
            obj.entry(f).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": v })
}

/// The config hash a mirror pod carries, if it is one.
pub fn mirror_hash(pod: &k8s::Pod) -> Option<&str> {
    pod.metadata.annotations.as_ref()?.get(ANNOTATION_CONFIG_MIRROR).map(String::as_str)
}

/// The Node object of this kubelet, Ready, with its address.
pub fn node_object(node: &str, host_ip: &str, port: u16, now: Time) -> k8s::Node {
    k8s::Node {
        metadata: kube::api::ObjectMeta {
            name: Some(node.to_owned()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_owned(), node.to_owned()),
                ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ])),
            ..Default::default()
        },
        spec: Some(k8s::NodeSpec::default()),
        status: Some(node_status(node, host_ip, port, now)),
    }
}

/// The Node's status: Ready with `now` as heartbeat. A non-zero `port` is
/// published as the node's kubelet endpoint, where the API server reaches it
/// for pods' logs.
pub fn node_status(node: &str, host_ip: &str, port: u16, now: Time) -> k8s::NodeStatus {
    k8s::NodeStatus {
        daemon_endpoints: (port != 0).then(|| k8s::NodeDaemonEndpoints {
            kubelet_endpoint: Some(k8s::DaemonEndpoint { port: i32::from(port) }),
        }),
        addresses: Some(vec![
            k8s::NodeAddress { type_: "InternalIP".into(), address: host_ip.to_owned() },
            k8s::NodeAddress { type_: "Hostname".into(), address: node.to_owned() },
        ]),
        conditions: Some(vec![k8s::NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            message: Some("km kubelet is posting ready status".into()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now),
        }]),
        node_info: Some(k8s::NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            operating_system: std::env::consts::OS.into(),
            kubelet_version: format!("km-{}", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Logs a failure once when things start failing (later failures at debug
/// level, as they may alternate between API servers), and the recovery once.
#[derive(Default)]
struct Reporter {
    failing: bool,
}

impl Reporter {
    fn result<T>(&mut self, what: &str, r: Result<T, MirrorError>) -> Option<T> {
        match r {
            Ok(v) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!("{what}: the API server answers again");
                }
                Some(v)
            }
            Err(e) => {
                if std::mem::replace(&mut self.failing, true) {
                    tracing::debug!("{what}: {e} (retrying)");
                } else {
                    tracing::warn!("{what}: {e} (retrying)");
                }
                None
            }
        }
    }
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> MirrorError {
    let what = what.into();
    move |source| MirrorError::Api { what, source }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// The Node a kubelet (or an executor) keeps: its name, address, the port of its endpoint, and
/// annotations it publishes (km executor: its executor ID and resources).
#[derive(Clone, Debug, Default)]
pub struct NodeSpec {
    pub name: String,
    pub host_ip: String,
    pub port: u16,
    pub annotations: BTreeMap<String, String>,
    /// Create the Node when it does not exist (km kubelet). km executor leaves that to the
    /// scheduler and the controller-manager: a Node deleted because its agent is gone must not
    /// come back from an executor that outlived the agent.
    pub create: bool,
}

/// Keeps mirror pods and the Node in sync until `pods` closes. `pods` holds
/// the static pods being run, each with its current status.
pub async fn run(
    clients: Vec<kube::Client>,
    spec: NodeSpec,
    mut pods: watch::Receiver<Vec<k8s::Pod>>,
) {
    let node = spec.name.clone();
    let Some(mut client) = clients.first().cloned() else { return };
    let mut which = 0;
    let mut node_rep = Reporter::default();
    let mut pod_rep = Reporter::default();
    let mut node_ok = false;
    // Mirror pod name → (namespace, status last pushed).
    let mut pushed: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heartbeat: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = pods.changed() => if changed.is_err() { return },
        }
        let heartbeat_due = last_heartbeat.is_none_or(|t| t.elapsed() >= HEARTBEAT) || !node_ok;
        let mut failed = false;
        if heartbeat_due {
            let r = sync_node(&client, &spec).await;
            failed |= r.is_err();
            node_ok = node_rep.result("registering node", r).is_some();
            if node_ok {
                last_heartbeat = Some(tokio::time::Instant::now());
            }
        }
        let desired = pods.borrow_and_update().clone();
        let r = sync_pods(&client, &node, &desired, &mut pushed).await;
        failed |= r.is_err();
        pod_rep.result("mirror pods", r);
        if failed && clients.len() > 1 {
            which = (which + 1) % clients.len();
            if let Some(c) = clients.get(which) {
                client = c.clone();
            }
        }
    }
}

async fn sync_node(client: &kube::Client, spec: &NodeSpec) -> Result<(), MirrorError> {
    let NodeSpec { name: node, host_ip, port, annotations, .. } = spec;
    let (node, port) = (node.as_str(), *port);
    let nodes: Api<k8s::Node> = Api::all(client.clone());
    let existing = nodes.get_opt(node).await.map_err(api_err(format!("getting node {node}")))?;
    let current =
        existing.as_ref().and_then(|n| n.metadata.annotations.clone()).unwrap_or_default();
    if existing.is_none() {
        match nodes.create(&PostParams::default(), &node_object(node, host_ip, port, now())).await {
            Ok(_) => tracing::info!(node, "registered node"),
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(api_err(format!("creating node {node}"))(e)),
        }
    }
    if annotations.iter().any(|(k, v)| current.get(k) != Some(v)) {
        let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
        nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err(format!("annotating node {node}")))?;
    }
    let status = node_status(node, host_ip, port, now());
    let patch = serde_json::json!({ "status": status });
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api_err(format!("updating the status of node {node}")))?;
    Ok(())
}

async fn sync_pods(
    client: &kube::Client,
    node: &str,
    desired: &[k8s::Pod],
    pushed: &mut BTreeMap<(String, String), Option<String>>,
) -> Result<(), MirrorError> {
    let all: Api<k8s::Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let listed = all.list(&on_node).await.map_err(api_err("listing pods"))?;
    let mut existing: BTreeMap<(String, String), k8s::Pod> = BTreeMap::new();
    for p in listed.items {
        let on_node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
        if on_node && mirror_hash(&p).is_some() {
            let key = (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
            );
            existing.insert(key, p);
        }
    }
    let mut want: BTreeMap<(String, String), &k8s::Pod> = BTreeMap::new();
    for p in desired {
        let key = (
            p.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            p.metadata.name.clone().unwrap_or_default(),
        );
        want.insert(key, p);
    }
    let mut first_err = None;
    // Mirror pods of this node with no static pod (or of an older manifest).
    for (key, p) in &existing {
        // Someone deleted it gracefully: finish the deletion, then recreate.
        let deleting = p.metadata.deletion_timestamp.is_some();
        let stale = deleting
            || match want.get(key) {
                None => true,
                Some(sp) => mirror_hash(&mirror_pod(sp, node)) != mirror_hash(p),
            };
        if stale {
            let api: Api<k8s::Pod> = Api::namespaced(client.clone(), &key.0);
            match api
                .delete(
                    &key.1,
                    &DeleteParams { grace_period_seconds: Some(0), ..Default::default() },
                )
                .await
            {
                Ok(_) => tracing::info!(pod = format!("{}/{}", key.0, key.1), "deleted mirror pod"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    first_err
                        .get_or_insert(
                            api_err(format!("deleting mirror pod {}/{}", key.0, key.1))(e),
                        );
                }
            }
            pushed.remove(key);
        }
    }
    pushed.retain(|k, _| want.contains_key(k));
    for (key, sp) in &want {
        let api: Api<k8s::Pod> = Api::namespaced(client.clone(), &key.0);
        let mirror = mirror_pod(sp, node);
        let present = existing.get(key).is_some_and(|p| {
            p.metadata.deletion_timestamp.is_none() && mirror_hash(p) == mirror_hash(&mirror)
        });
        if !present {
            match api.create(&PostParams::default(), &mirror).await {
                Ok(_) => {
                    tracing::info!(pod = format!("{}/{}", key.0, key.1), "created mirror pod");
                    pushed.insert(key.clone(), None);
                }
                Err(e) if is_conflict(&e) => {
                    // Still being deleted (an older manifest): next round.
                    continue;
                }
                Err(e) => {
                    first_err
                        .get_or_insert(
                            api_err(format!("creating mirror pod {}/{}", key.0, key.1))(e),
                        );
                    continue;
                }
            }
        }
        let Some(status) = sp.status.as_ref() else { continue };
        let body = serde_json::to_string(status).unwrap_or_default();
        if !present || pushed.get(key).and_then(Option::as_ref) != Some(&body) {
            let patch = status_patch(status);
            match api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    pushed.insert(key.clone(), Some(body));
                }
                Err(e) => {
                    first_err.get_or_insert(api_err(format!(
                        "updating the status of mirror pod {}/{}",
                        key.0, key.1
                    ))(e));
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn static_pod() -> k8s::Pod {
        let entry = crate::source::parse(
            std::path::Path::new("/m/web.yaml"),
            b"metadata: {name: web, namespace: kube-system, labels: {app: web}}\nspec:\n  runtimeClassName: native\n  containers: [{name: c, command: [/bin/sleep, '60']}]\n",
            "node1",
        );
        match entry {
            crate::source::Entry::Pod { mut pod, .. } => {
                pod.status =
                    Some(k8s::PodStatus { phase: Some("Running".into()), ..Default::default() });
                *pod
            }
            crate::source::Entry::Bad { error, .. } => panic!("{error}"),
        }
    }

    #[test]
    fn mirror_pod_carries_the_hash_and_the_node() {
        let sp = static_pod();
        let hash = sp.metadata.uid.clone().expect("uid");
        let m = mirror_pod(&sp, "node1");
        assert_eq!(m.metadata.name.as_deref(), Some("web-node1"));
        assert_eq!(m.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(m.metadata.uid, None, "the API server gives the mirror its own uid");
        assert!(m.status.is_none());
        let ann = m.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(ann.get(ANNOTATION_CONFIG_MIRROR), Some(&hash));
        assert_eq!(ann.get(ANNOTATION_CONFIG_SOURCE).map(String::as_str), Some("file"));
        assert_eq!(mirror_hash(&m), Some(hash.as_str()));
        let spec = m.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("node1"));
        assert_eq!(spec.containers[0].image.as_deref(), Some(NATIVE_IMAGE_PLACEHOLDER));
        assert_eq!(
            m.metadata.labels.as_ref().and_then(|l| l.get("app")).map(String::as_str),
            Some("web")
        );
        assert_eq!(mirror_hash(&sp), None, "the static pod itself is no mirror");
    }

    #[test]
    fn status_patches_null_what_is_gone() {
        let st = k8s::PodStatus { phase: Some("Running".into()), ..Default::default() };
        let p = status_patch(&st);
        assert_eq!(p["status"]["phase"], "Running");
        assert!(p["status"]["message"].is_null() && p["status"].get("message").is_some());
        assert!(p["status"].get("podIP").is_some_and(serde_json::Value::is_null));
    }

    #[test]
    fn node_is_ready_with_its_addresses() {
        let n = node_object("node1", "10.0.0.5", 10250, now());
        assert_eq!(n.metadata.name.as_deref(), Some("node1"));
        let st = n.status.expect("status");
        let ready = st.conditions.iter().flatten().find(|c| c.type_ == "Ready").expect("Ready");
        assert_eq!(ready.status, "True");
        assert!(ready.last_heartbeat_time.is_some());
        let addrs = st.addresses.expect("addresses");
        assert!(addrs.iter().any(|a| a.type_ == "InternalIP" && a.address == "10.0.0.5"));
        let endpoint = st.daemon_endpoints.and_then(|d| d.kubelet_endpoint).expect("endpoint");
        assert_eq!(endpoint.port, 10250);
        let quiet = node_status("node1", "10.0.0.5", 0, now());
        assert!(quiet.daemon_endpoints.is_none());
    }

    #[test]
    fn failures_are_reported_per_state_change() {
        let bad = || Err::<(), _>(MirrorError::BadUrl { url: "u".into(), message: "m".into() });
        let mut r = Reporter::default();
        assert_eq!(r.result("x", Ok::<_, MirrorError>(1)), Some(1));
        assert!(!r.failing);
        assert_eq!(r.result("x", bad()), None);
        assert!(r.failing);
        assert_eq!(r.result("x", bad()), None);
        assert!(r.failing, "still failing: logged at debug level only");
        assert_eq!(r.result("x", Ok::<_, MirrorError>(2)), Some(2));
        assert!(!r.failing);
    }

    #[tokio::test]
    async fn bad_api_server_urls_and_kubeconfigs_are_named() {
        let Err(err) = clients(&["http://[bad".into()], None).await else {
            panic!("a bad url is refused")
        };
        assert!(err.to_string().contains("http://[bad"), "{err}");
        let missing = std::path::Path::new("/nonexistent/node.kubeconfig");
        let Err(err) = clients(&["http://127.0.0.1:1".into()], Some(missing)).await else {
            panic!("a missing kubeconfig is refused")
        };
        assert!(err.to_string().starts_with("--kubeconfig /nonexistent/node.kubeconfig"), "{err}");
    }
}
