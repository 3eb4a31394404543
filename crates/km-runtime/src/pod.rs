//! The pod model the runtimes work from, derived from a Kubernetes
//! `core/v1` Pod: identity and ownership labels, the runtime class, restart
//! policy and grace period, and per container the command, environment
//! (with `fieldRef` resolved), working directory, ports, limits, volume
//! mounts and probes.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1 as k8s;

use crate::error::{Error, Result};

/// Label naming the pod on every container and sandbox km creates.
pub const LABEL_POD_NAME: &str = "io.km.pod.name";
/// Label naming the pod's namespace.
pub const LABEL_POD_NAMESPACE: &str = "io.km.pod.namespace";
/// Label carrying the pod's uid.
pub const LABEL_POD_UID: &str = "io.km.pod.uid";
/// Label carrying the Mesos task id (executor only).
pub const LABEL_TASK_ID: &str = "io.km.task.id";
/// Label naming the container within the pod (`POD` for the sandbox).
pub const LABEL_CONTAINER: &str = "io.km.container.name";
/// Label naming the km instance (its root directory) that owns a container,
/// so that two runtimes on one host do not remove each other's pods.
pub const LABEL_OWNER: &str = "io.km.owner";

/// `runtimeClassName` that selects the native runtime.
pub const NATIVE_RUNTIME_CLASS: &str = "native";
/// Annotation `native.km.io/network: isolated` gives a native pod its own
/// network namespace (loopback only), shared by all its containers; the
/// default is the host network.
pub const ANNOTATION_NATIVE_NETWORK: &str = "native.km.io/network";

/// The runtime a pod asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeClass {
    Docker,
    Native,
}

/// `spec.restartPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// `imagePullPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Who a pod is: namespace, name, uid, and optionally the Mesos task.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodKey {
    /// `namespace/name`, as kubectl prints it.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: Option<u16>,
    pub host_ip: Option<String>,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Resource limits, already converted from quantities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// Where a volume appears in a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub volume: String,
    pub container_path: String,
    pub read_only: bool,
    pub sub_path: Option<String>,
}

/// Everything a runtime needs about one container.
#[derive(Clone, Debug)]
pub struct ContainerConfig {
    pub name: String,
    pub image: Option<String>,
    pub pull_policy: PullPolicy,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Resolved environment, in declaration order.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub ports: Vec<PortMapping>,
    pub limits: Limits,
    pub mounts: Vec<Mount>,
    pub liveness: Option<k8s::Probe>,
    pub readiness: Option<k8s::Probe>,
    pub startup: Option<k8s::Probe>,
}

/// A pod ready to be run: the Kubernetes object plus what was derived from it.
#[derive(Clone, Debug)]
pub struct PodPlan {
    pub key: PodKey,
    pub task_id: Option<String>,
    pub runtime: RuntimeClass,
    pub restart_policy: RestartPolicy,
    pub grace_period: Duration,
    pub host_network: bool,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub volumes: Vec<k8s::Volume>,
    pub containers: Vec<ContainerConfig>,
    /// The pod as given, for `fieldRef` and status.
    pub pod: k8s::Pod,
}

/// Node facts that `fieldRef` and the status refer to.
#[derive(Clone, Debug, Default)]
pub struct NodeContext {
    pub node_name: String,
    pub host_ip: String,
}

impl PodPlan {
    /// Derives the plan from a pod. The pod must have a name, and a uid
    /// unless `default_uid` gives one.
    pub fn from_pod(pod: &k8s::Pod, node: &NodeContext) -> Result<PodPlan> {
        let meta = &pod.metadata;
        let name =
            meta.name.clone().filter(|n| !n.is_empty()).ok_or_else(|| Error::InvalidPod {
                pod: "<unnamed>".into(),
                reason: "metadata.name is required".into(),
            })?;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let full = format!("{namespace}/{name}");
        let invalid = |reason: String| Error::InvalidPod { pod: full.clone(), reason };
        let uid = meta
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| invalid("metadata.uid is required".into()))?;
        let spec = pod.spec.as_ref().ok_or_else(|| invalid("spec is required".into()))?;
        if spec.containers.is_empty() {
            return Err(invalid("spec.containers must not be empty".into()));
        }
        let runtime = match spec.runtime_class_name.as_deref() {
            None | Some("") | Some("docker") | Some("runc") => RuntimeClass::Docker,
            Some(NATIVE_RUNTIME_CLASS) => RuntimeClass::Native,
            Some(other) => {
                return Err(invalid(format!(
                    "runtimeClassName {other:?} is not known (use \"native\" or leave it unset for Docker)"
                )));
            }
        };
        let restart_policy = match spec.restart_policy.as_deref() {
            None | Some("Always") => RestartPolicy::Always,
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            Some(other) => return Err(invalid(format!("restartPolicy {other:?} is not valid"))),
        };
        let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0);
        let grace_period = Duration::from_secs(u64::try_from(grace).unwrap_or(30));
        let mut seen = std::collections::BTreeSet::new();
        let mut containers = Vec::with_capacity(spec.containers.len());
        for c in &spec.containers {
            if !seen.insert(c.name.clone()) {
                return Err(invalid(format!("container name {:?} is used twice", c.name)));
            }
            containers.push(container_config(pod, c, runtime, node).map_err(|e| match e {
                Error::Config { container, message } => {
                    invalid(format!("container {container:?}: {message}"))
                }
                other => other,
            })?);
        }
        let task_id =
            meta.annotations.as_ref().and_then(|a| a.get("k8s.mesosphere.io/taskId")).cloned();
        Ok(PodPlan {
            key: PodKey { namespace, name: name.clone(), uid },
            task_id,
            runtime,
            restart_policy,
            grace_period,
            host_network: spec.host_network.unwrap_or(false),
            hostname: spec.hostname.clone().unwrap_or(name),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            volumes: spec.volumes.clone().unwrap_or_default(),
            containers,
            pod: pod.clone(),
        })
    }

    /// The ownership labels put on every container and sandbox of this pod.
    pub fn owner_labels(&self) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        l.insert(LABEL_POD_NAME.to_owned(), self.key.name.clone());
        l.insert(LABEL_POD_NAMESPACE.to_owned(), self.key.namespace.clone());
        l.insert(LABEL_POD_UID.to_owned(), self.key.uid.clone());
        if let Some(task) = &self.task_id {
            l.insert(LABEL_TASK_ID.to_owned(), task.clone());
        }
        l
    }

    /// Container names in spec order.
    pub fn container_names(&self) -> Vec<String> {
        self.containers.iter().map(|c| c.name.clone()).collect()
    }
}

fn container_config(
    pod: &k8s::Pod,
    c: &k8s::Container,
    runtime: RuntimeClass,
    node: &NodeContext,
) -> Result<ContainerConfig> {
    let cfg_err = |message: String| Error::Config { container: c.name.clone(), message };
    let image = c.image.clone().filter(|i| !i.is_empty());
    if runtime == RuntimeClass::Docker && image.is_none() {
        return Err(cfg_err("image is required".into()));
    }
    let command = c.command.clone().unwrap_or_default();
    if runtime == RuntimeClass::Native && command.is_empty() {
        return Err(cfg_err("the native runtime needs a command (a binary on the host)".into()));
    }
    let latest = image.as_deref().is_some_and(|i| i.ends_with(":latest") || !has_tag(i));
    let pull_policy = match c.image_pull_policy.as_deref() {
        Some("Always") => PullPolicy::Always,
        Some("Never") => PullPolicy::Never,
        Some("IfNotPresent") => PullPolicy::IfNotPresent,
        None | Some("") => {
            if latest {
                PullPolicy::Always
            } else {
                PullPolicy::IfNotPresent
            }
        }
        Some(other) => return Err(cfg_err(format!("imagePullPolicy {other:?} is not valid"))),
    };
    let mut ports = Vec::new();
    for p in c.ports.iter().flatten() {
        let container_port = u16::try_from(p.container_port)
            .map_err(|_| cfg_err(format!("containerPort {} is out of range", p.container_port)))?;
        let host_port = match p.host_port {
            None | Some(0) => None,
            Some(h) => Some(
                u16::try_from(h).map_err(|_| cfg_err(format!("hostPort {h} is out of range")))?,
            ),
        };
        ports.push(PortMapping {
            container_port,
            host_port,
            host_ip: p.host_ip.clone(),
            protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
        });
    }
    let mut limits = Limits::default();
    if let Some(l) = c.resources.as_ref().and_then(|r| r.limits.as_ref()) {
        if let Some(q) = l.get("cpu") {
            limits.cpu_millis = Some(parse_cpu_millis(&q.0).map_err(cfg_err)?);
        }
        if let Some(q) = l.get("memory") {
            limits.memory_bytes = Some(parse_memory_bytes(&q.0).map_err(cfg_err)?);
        }
    }
    let mounts = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| Mount {
            volume: m.name.clone(),
            container_path: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false),
            sub_path: m.sub_path.clone().filter(|s| !s.is_empty()),
        })
        .collect();
    Ok(ContainerConfig {
        name: c.name.clone(),
        image,
        pull_policy,
        command,
        args: c.args.clone().unwrap_or_default(),
        env: resolve_env(pod, c, node)?,
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        ports,
        limits,
        mounts,
        liveness: c.liveness_probe.clone(),
        readiness: c.readiness_probe.clone(),
        startup: c.startup_probe.clone(),
    })
}

fn has_tag(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.contains(':') || last.contains('@')
}

/// Resolves `env` (value, fieldRef, resourceFieldRef). `configMapKeyRef`
/// and `secretKeyRef` need an API server, which the runtime does not have:
/// callers with one replace them first ([`crate::config_sources`]); left
/// here they are an error unless marked optional, and optional ones are
/// left out.
fn resolve_env(
    pod: &k8s::Pod,
    c: &k8s::Container,
    node: &NodeContext,
) -> Result<Vec<(String, String)>> {
    let cfg_err = |message: String| Error::Config { container: c.name.clone(), message };
    let mut out: Vec<(String, String)> = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    field_ref(pod, &f.field_path, node).ok_or_else(|| {
                        cfg_err(format!("env {}: unsupported fieldPath {:?}", e.name, f.field_path))
                    })?
                } else if let Some(r) = &from.resource_field_ref {
                    resource_field_ref(c, &r.resource).ok_or_else(|| {
                        cfg_err(format!("env {}: unsupported resource {:?}", e.name, r.resource))
                    })?
                } else if let Some(k) = &from.config_map_key_ref {
                    if k.optional == Some(true) {
                        continue;
                    }
                    return Err(cfg_err(format!(
                        "env {}: configMapKeyRef {}/{} needs an API server (--api-servers)",
                        e.name, k.name, k.key
                    )));
                } else if let Some(k) = &from.secret_key_ref {
                    if k.optional == Some(true) {
                        continue;
                    }
                    return Err(cfg_err(format!(
                        "env {}: secretKeyRef {}/{} needs an API server (--api-servers)",
                        e.name, k.name, k.key
                    )));
                } else {
                    return Err(cfg_err(format!("env {}: empty valueFrom", e.name)));
                }
            }
            (Some(v), None) => expand_vars(v, &out),
            (None, None) => String::new(),
        };
        out.retain(|(k, _)| k != &e.name);
        out.push((e.name.clone(), value));
    }
    Ok(out)
}

/// `$(VAR)` references to earlier variables, as Kubernetes expands them;
/// `$$` is a literal `$`.
fn expand_vars(v: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(body) = tail.strip_prefix("$(")
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, val)) => out.push_str(val),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn field_ref(pod: &k8s::Pod, path: &str, node: &NodeContext) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => Some(meta.namespace.clone().unwrap_or_else(|| "default".into())),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => {
            Some(spec.and_then(|s| s.node_name.clone()).unwrap_or_else(|| node.node_name.clone()))
        }
        "spec.serviceAccountName" => {
            Some(spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default())
        }
        "status.hostIP" | "status.hostIPs" => Some(node.host_ip.clone()),
        // Native pods and host-network pods share the host's address; Docker
        // pods get theirs once the sandbox exists (see `DockerRuntime`).
        "status.podIP" | "status.podIPs" => Some(node.host_ip.clone()),
        _ => map_key("metadata.labels['", meta.labels.as_ref())
            .or_else(|| map_key("metadata.annotations['", meta.annotations.as_ref())),
    }
}

fn resource_field_ref(c: &k8s::Container, resource: &str) -> Option<String> {
    let res = c.resources.as_ref();
    let get = |limits: bool, name: &str| {
        let m = if limits {
            res.and_then(|r| r.limits.as_ref())
        } else {
            res.and_then(|r| r.requests.as_ref())
        };
        m.and_then(|m| m.get(name)).map(|q| q.0.clone())
    };
    match resource {
        "limits.cpu" => Some(
            get(true, "cpu")
                .and_then(|q| parse_cpu_millis(&q).ok())
                .map_or(0, |m| m.div_ceil(1000))
                .to_string(),
        ),
        "limits.memory" => Some(
            get(true, "memory").and_then(|q| parse_memory_bytes(&q).ok()).unwrap_or(0).to_string(),
        ),
        "requests.cpu" => Some(
            get(false, "cpu")
                .and_then(|q| parse_cpu_millis(&q).ok())
                .map_or(0, |m| m.div_ceil(1000))
                .to_string(),
        ),
        "requests.memory" => Some(
            get(false, "memory").and_then(|q| parse_memory_bytes(&q).ok()).unwrap_or(0).to_string(),
        ),
        _ => None,
    }
}

/// Parses a CPU quantity (`500m`, `2`, `0.25`) into millicores.
pub fn parse_cpu_millis(q: &str) -> std::result::Result<u64, String> {
    let q = q.trim();
    let bad = || format!("cpu quantity {q:?} is not valid");
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<u64>().map_err(|_| bad());
    }
    let v: f64 = q.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    // Quantities are small; rounding up to whole millicores as Kubernetes does.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok((v * 1000.0).ceil() as u64)
}

/// Parses a memory quantity (`64Mi`, `1G`, `128974848`, `129e6`) into bytes.
pub fn parse_memory_bytes(q: &str) -> std::result::Result<u64, String> {
    let q = q.trim();
    let bad = || format!("memory quantity {q:?} is not valid");
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("m", 1e-3),
    ];
    let (num, mult) =
        SUFFIXES.iter().find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m))).unwrap_or((q, 1.0));
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok((v * mult).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> k8s::Pod {
        serde_json::from_value(json).expect("test pod")
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_cpu_millis("500m"), Ok(500));
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        assert_eq!(parse_cpu_millis("0.25"), Ok(250));
        assert!(parse_cpu_millis("lots").is_err());
        assert_eq!(parse_memory_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory_bytes("129e6"), Ok(129_000_000));
        assert_eq!(parse_memory_bytes("4096"), Ok(4096));
        assert!(parse_memory_bytes("-1Mi").is_err());
    }

    #[test]
    fn env_resolves_values_field_refs_and_expansion() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
            "spec": {"containers": [{
                "name": "c", "image": "img:1",
                "resources": {"limits": {"memory": "64Mi"}},
                "env": [
                    {"name": "A", "value": "a"},
                    {"name": "B", "value": "$(A)-b-$$(A)-$(NOPE)"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
                    {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": true}}}
                ]
            }]}
        }));
        let node = NodeContext { node_name: "n1".into(), host_ip: "10.0.0.1".into() };
        let plan = PodPlan::from_pod(&p, &node).expect("plan");
        let env: BTreeMap<_, _> = plan.containers[0].env.iter().cloned().collect();
        assert_eq!(env["B"], "a-b-$(A)-$(NOPE)");
        assert_eq!(env["POD"], "web");
        assert_eq!(env["NS"], "ns");
        assert_eq!(env["APP"], "x");
        assert_eq!(env["HOST"], "10.0.0.1");
        assert_eq!(env["MEM"], (64u64 << 20).to_string());
        assert!(!env.contains_key("OPT"));
        assert_eq!(plan.runtime, RuntimeClass::Docker);
        assert_eq!(plan.containers[0].pull_policy, PullPolicy::IfNotPresent);
        assert_eq!(plan.owner_labels()[LABEL_POD_UID], "u1");
    }

    #[test]
    fn config_map_refs_need_an_api_server() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "img:1", "env": [
                {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}
            ]}]}
        }));
        let err = PodPlan::from_pod(&p, &NodeContext::default()).expect_err("must fail");
        assert!(err.to_string().contains("configMapKeyRef cm/k needs an API server"), "{err}");
    }

    #[test]
    fn native_needs_a_command_and_unknown_classes_fail() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "n", "uid": "u"},
            "spec": {"runtimeClassName": "native", "containers": [{"name": "c"}]}
        }));
        let err = PodPlan::from_pod(&p, &NodeContext::default()).expect_err("must fail");
        assert!(err.to_string().contains("needs a command"), "{err}");
        let p = pod(serde_json::json!({
            "metadata": {"name": "n", "uid": "u"},
            "spec": {"runtimeClassName": "kata", "containers": [{"name": "c", "image": "i"}]}
        }));
        let err = PodPlan::from_pod(&p, &NodeContext::default()).expect_err("must fail");
        assert!(err.to_string().contains("\"kata\" is not known"), "{err}");
    }

    #[test]
    fn latest_images_default_to_always_pull() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "n", "uid": "u"},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 3,
                     "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "reg:5000/x:latest"}]}
        }));
        let plan = PodPlan::from_pod(&p, &NodeContext::default()).expect("plan");
        assert_eq!(plan.containers[0].pull_policy, PullPolicy::Always);
        assert_eq!(plan.containers[1].pull_policy, PullPolicy::Always);
        assert_eq!(plan.restart_policy, RestartPolicy::Never);
        assert_eq!(plan.grace_period, Duration::from_secs(3));
    }
}
