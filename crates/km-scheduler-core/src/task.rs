//! What a launched pod looks like to Mesos and to the API: task IDs and names, the annotations
//! recorded on the pod, and the pod as it travels in `TaskInfo.data`.
//!
//! Keys and formats are the original k8sm's where one existed, so that tools reading them keep
//! working: annotations `k8s.mesosphere.io/{taskId,slaveId,offerId,executorId,bindingHost}`,
//! host-port annotations `k8s.mesosphere.io/port_<PROTO>_<containerPort>` and
//! `k8s.mesosphere.io/portName_<PROTO>_<name>`, task names `<pod>.<namespace>.pod`.
//! Task IDs are `pod.<pod UID>.<suffix>`: the pod's UID in the ID lets a restarted scheduler
//! match a running task to its pod even if it died before recording the task on the pod.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use km_offer_matcher::PortAssignment;

/// Annotation: the task ID.
pub const TASK_ID: &str = "k8s.mesosphere.io/taskId";
/// Annotation: the agent ID.
pub const SLAVE_ID: &str = "k8s.mesosphere.io/slaveId";
/// Annotation: the (first) offer the task was launched on.
pub const OFFER_ID: &str = "k8s.mesosphere.io/offerId";
/// Annotation: the executor ID.
pub const EXECUTOR_ID: &str = "k8s.mesosphere.io/executorId";
/// Annotation: the host the pod was launched on.
pub const BINDING_HOST: &str = "k8s.mesosphere.io/bindingHost";
/// Node annotation: the Mesos agent ID of the node.
pub const NODE_AGENT_ID: &str = "k8s.mesosphere.io/agentId";
/// Node annotation: the executor ID running on the node.
pub const NODE_EXECUTOR_ID: &str = "k8s.mesosphere.io/executorId";
/// Node annotation: the resources of that executor (comma-separated base64 of protobuf
/// `mesos.Resource`s, the original's codec).
pub const NODE_EXECUTOR_RESOURCES: &str = "k8s.mesosphere.io/executorResources";
/// Annotation of mirror pods (never scheduled).
pub const MIRROR_POD: &str = "kubernetes.io/config.mirror";
/// Task label: pod namespace.
pub const LABEL_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Task label: pod name.
pub const LABEL_NAME: &str = "io.kubernetes.pod.name";
/// Task label: pod UID.
pub const LABEL_UID: &str = "io.kubernetes.pod.uid";

/// The prefix of km task IDs.
const TASK_PREFIX: &str = "pod.";

/// A task ID for a pod.
pub fn task_id(pod_uid: &str, suffix: u32) -> String {
    format!("{TASK_PREFIX}{pod_uid}.{suffix:08x}")
}

/// The pod UID inside a km task ID (`None` for IDs of another form, e.g. the original's
/// `pod.<uuid>`).
pub fn pod_uid_of(task_id: &str) -> Option<&str> {
    let rest = task_id.strip_prefix(TASK_PREFIX)?;
    let (uid, suffix) = rest.rsplit_once('.')?;
    (!uid.is_empty() && suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(uid)
}

/// The task name of a pod.
pub fn task_name(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.pod")
}

/// The annotation key of a mapped container port.
pub fn port_annotation(protocol: &str, container_port: i32) -> String {
    format!("k8s.mesosphere.io/port_{protocol}_{container_port}")
}

/// The annotation key of a mapped named port.
pub fn port_name_annotation(protocol: &str, name: &str) -> String {
    format!("k8s.mesosphere.io/portName_{protocol}_{name}")
}

/// What a launch records on the pod.
pub struct LaunchFacts<'a> {
    /// Task ID.
    pub task_id: &'a str,
    /// Agent ID.
    pub agent_id: &'a str,
    /// First offer consumed.
    pub offer_id: &'a str,
    /// Executor ID.
    pub executor_id: &'a str,
    /// Hostname (node name).
    pub hostname: &'a str,
    /// Host ports given to container ports.
    pub ports: &'a [PortAssignment],
}

/// The annotations a launch adds to the pod, sorted by key.
pub fn launch_annotations(f: &LaunchFacts<'_>) -> Vec<(String, String)> {
    let mut out = vec![
        (TASK_ID.to_owned(), f.task_id.to_owned()),
        (SLAVE_ID.to_owned(), f.agent_id.to_owned()),
        (OFFER_ID.to_owned(), f.offer_id.to_owned()),
        (EXECUTOR_ID.to_owned(), f.executor_id.to_owned()),
        (BINDING_HOST.to_owned(), f.hostname.to_owned()),
    ];
    for p in f.ports {
        out.push((port_annotation(&p.protocol, p.container_port), p.host_port.to_string()));
        if let Some(name) = &p.name {
            out.push((port_name_annotation(&p.protocol, name), p.host_port.to_string()));
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// The pod as the executor receives it: bound to `hostname`, carrying `annotations`, with the
/// mapped host ports filled in, without status and managed fields.
pub fn task_pod(
    pod: &Pod,
    hostname: &str,
    annotations: &[(String, String)],
    ports: &[PortAssignment],
) -> Pod {
    let mut out = pod.clone();
    out.status = None;
    out.metadata.managed_fields = None;
    let ann = out.metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in annotations {
        ann.insert(k.clone(), v.clone());
    }
    if let Some(spec) = out.spec.as_mut() {
        spec.node_name = Some(hostname.to_owned());
        let containers =
            spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten());
        for c in containers {
            for p in c.ports.iter_mut().flatten() {
                let proto = p.protocol.as_deref().unwrap_or("TCP");
                if let Some(a) = ports.iter().find(|a| {
                    a.container == c.name
                        && a.container_port == p.container_port
                        && a.protocol == proto
                }) {
                    p.host_port = i32::try_from(a.host_port).ok();
                }
            }
        }
    }
    out
}

/// The labels of a pod's task.
pub fn task_labels(namespace: &str, name: &str, uid: &str) -> Vec<(String, String)> {
    vec![
        (LABEL_NAMESPACE.to_owned(), namespace.to_owned()),
        (LABEL_NAME.to_owned(), name.to_owned()),
        (LABEL_UID.to_owned(), uid.to_owned()),
    ]
}

/// The kill grace period of a pod: `terminationGracePeriodSeconds`, else `default`.
pub fn grace_of(pod: &Pod, default: Duration) -> Duration {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(default, Duration::from_secs)
}

/// The grace period of a pod being deleted: `deletionGracePeriodSeconds`, else its kill grace.
pub fn deletion_grace_of(pod: &Pod, default: Duration) -> Duration {
    pod.metadata
        .deletion_grace_period_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or_else(|| grace_of(pod, default), Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};

    use super::*;

    #[test]
    fn task_ids_carry_the_pod_uid() {
        let id = task_id("6d1c2a9e-1111-2222-3333-444455556666", 0xab);
        assert_eq!(id, "pod.6d1c2a9e-1111-2222-3333-444455556666.000000ab");
        assert_eq!(pod_uid_of(&id), Some("6d1c2a9e-1111-2222-3333-444455556666"));
        assert_eq!(pod_uid_of("pod.6d1c2a9e-1111-2222-3333-444455556666"), None);
        assert_eq!(pod_uid_of("other.x.000000ab"), None);
        assert_eq!(pod_uid_of("pod..000000ab"), None);
        assert_eq!(task_name("default", "web-1"), "web-1.default.pod");
    }

    #[test]
    fn task_pod_maps_ports_and_records_the_launch() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    ports: Some(vec![
                        ContainerPort {
                            container_port: 80,
                            name: Some("http".into()),
                            ..Default::default()
                        },
                        ContainerPort {
                            container_port: 53,
                            protocol: Some("UDP".into()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let ports = vec![PortAssignment {
            container: "web".into(),
            container_port: 80,
            protocol: "TCP".into(),
            name: Some("http".into()),
            host_port: 31000,
        }];
        let ann = launch_annotations(&LaunchFacts {
            task_id: "t",
            agent_id: "a",
            offer_id: "o",
            executor_id: "e",
            hostname: "h1",
            ports: &ports,
        });
        let keys: Vec<&str> = ann.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"k8s.mesosphere.io/port_TCP_80"));
        assert!(keys.contains(&"k8s.mesosphere.io/portName_TCP_http"));
        let out = task_pod(&pod, "h1", &ann, &ports);
        let spec = out.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("h1"));
        let p = spec.containers[0].ports.as_ref().unwrap();
        assert_eq!(p[0].host_port, Some(31000));
        assert_eq!(p[1].host_port, None);
        assert_eq!(out.metadata.annotations.unwrap().get(TASK_ID).map(String::as_str), Some("t"));
    }

    #[test]
    fn grace_periods() {
        let mut pod = Pod::default();
        assert_eq!(grace_of(&pod, Duration::from_secs(30)), Duration::from_secs(30));
        pod.spec =
            Some(PodSpec { termination_grace_period_seconds: Some(5), ..Default::default() });
        assert_eq!(grace_of(&pod, Duration::from_secs(30)), Duration::from_secs(5));
        pod.metadata.deletion_grace_period_seconds = Some(2);
        assert_eq!(deletion_grace_of(&pod, Duration::from_secs(30)), Duration::from_secs(2));
        pod.metadata.deletion_grace_period_seconds = Some(-1);
        assert_eq!(deletion_grace_of(&pod, Duration::from_secs(30)), Duration::from_secs(5));
    }
}
