//! Turning the lifecycle's view into a Kubernetes `PodStatus`: phase,
//! conditions (PodScheduled, Initialized, ContainersReady, Ready),
//! containerStatuses, podIP and hostIP.

use std::time::SystemTime;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::lifecycle::{ContainerState, LifecycleStatus, Phase, Terminated};
use crate::pod::PodPlan;

/// A snapshot of one pod, published by its worker.
#[derive(Clone, Debug)]
pub struct PodSnapshot {
    pub phase: Phase,
    pub ready: bool,
    /// Current container id per container, in spec order (None before the
    /// first start).
    pub container_ids: Vec<Option<String>>,
    /// The pod's status in Kubernetes form.
    pub status: k8s::PodStatus,
    /// Whether the worker has stopped the pod and removed its sandbox.
    pub removed: bool,
}

fn time(t: SystemTime) -> Time {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Time(Timestamp::from_second(i64::try_from(secs).unwrap_or(0)).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn terminated(t: &Terminated, container_id: Option<&String>) -> k8s::ContainerStateTerminated {
    k8s::ContainerStateTerminated {
        exit_code: t.exit_code,
        reason: Some(t.reason.clone()),
        started_at: t.started_at.map(time),
        finished_at: Some(time(t.finished_at)),
        container_id: container_id.cloned(),
        ..Default::default()
    }
}

/// Builds the Kubernetes status.
pub fn pod_status(
    plan: &PodPlan,
    lc: &LifecycleStatus,
    container_ids: &[Option<String>],
    pod_ip: Option<&str>,
    host_ip: &str,
    start_time: SystemTime,
    scheme: &str,
) -> k8s::PodStatus {
    let now = time(SystemTime::now());
    let cond = |type_: &str, ok: bool, reason: Option<&str>| k8s::PodCondition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.map(str::to_owned),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    };
    let not_ready_reason =
        if lc.phase.is_terminal() { Some("PodCompleted") } else { Some("ContainersNotReady") };
    let conditions = vec![
        cond("PodScheduled", true, None),
        cond("Initialized", true, None),
        cond(
            "ContainersReady",
            lc.containers_ready,
            (!lc.containers_ready).then_some(not_ready_reason).flatten(),
        ),
        cond("Ready", lc.ready, (!lc.ready).then_some(not_ready_reason).flatten()),
    ];
    let statuses = lc
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let cid =
                container_ids.get(i).and_then(|c| c.as_ref()).map(|id| format!("{scheme}://{id}"));
            let state = match &c.state {
                ContainerState::Waiting { reason, message } => k8s::ContainerState {
                    waiting: Some(k8s::ContainerStateWaiting {
                        reason: Some(reason.clone()),
                        message: (!message.is_empty()).then(|| message.clone()),
                    }),
                    ..Default::default()
                },
                ContainerState::Running { started_at } => k8s::ContainerState {
                    running: Some(k8s::ContainerStateRunning {
                        started_at: Some(time(*started_at)),
                    }),
                    ..Default::default()
                },
                ContainerState::Terminated(t) => k8s::ContainerState {
                    terminated: Some(terminated(t, cid.as_ref())),
                    ..Default::default()
                },
            };
            let spec = plan.containers.get(i);
            k8s::ContainerStatus {
                name: c.name.clone(),
                state: Some(state),
                last_state: c.last_state.as_ref().map(|t| k8s::ContainerState {
                    terminated: Some(terminated(t, None)),
                    ..Default::default()
                }),
                ready: c.ready,
                started: Some(c.started),
                restart_count: i32::try_from(c.restart_count).unwrap_or(i32::MAX),
                image: spec.and_then(|s| s.image.clone()).unwrap_or_else(|| {
                    spec.and_then(|s| s.command.first().cloned()).unwrap_or_default()
                }),
                image_id: String::new(),
                container_id: cid,
                ..Default::default()
            }
        })
        .collect();
    let pod_ip = pod_ip.unwrap_or(host_ip).to_owned();
    k8s::PodStatus {
        phase: Some(lc.phase.as_str().to_owned()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        host_ip: Some(host_ip.to_owned()),
        host_ips: Some(vec![k8s::HostIP { ip: host_ip.to_owned() }]),
        pod_ip: Some(pod_ip.clone()),
        pod_ips: Some(vec![k8s::PodIP { ip: pod_ip }]),
        start_time: Some(time(start_time)),
        qos_class: Some(qos_class(plan).to_owned()),
        ..Default::default()
    }
}

fn qos_class(plan: &PodPlan) -> &'static str {
    let specs = plan.pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let mut any = false;
    let mut all_guaranteed = true;
    for c in specs {
        let r = c.resources.as_ref();
        let limits = r.and_then(|r| r.limits.as_ref());
        let requests = r.and_then(|r| r.requests.as_ref());
        any |= limits.is_some_and(|l| !l.is_empty()) || requests.is_some_and(|l| !l.is_empty());
        let guaranteed = ["cpu", "memory"].iter().all(|k| {
            let l = limits.and_then(|l| l.get(*k));
            let q = requests.and_then(|q| q.get(*k)).or(l);
            l.is_some() && l == q
        });
        all_guaranteed &= guaranteed;
    }
    if !any {
        "BestEffort"
    } else if all_guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}
