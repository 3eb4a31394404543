//! The decision of the endpoints controllers: a Service and the pods of its namespace give the
//! Endpoints object the Service should have. Pure.
//!
//! - Stock: each selected pod with an IP is an address (ready ones in `addresses`, the others
//!   in `notReadyAddresses`), with the container port the Service's `targetPort` names or
//!   numbers.
//! - HostIP:HostPort (`--host-port-endpoints`, as k8sm did): pods reach each other through the
//!   host ports the scheduler mapped, so an address is the pod's `hostIP` and its port the host
//!   port recorded in the pod's `k8s.mesosphere.io/port_<PROTO>_<containerPort>` or
//!   `k8s.mesosphere.io/portName_<PROTO>_<name>` annotation. Only Ready pods are listed, and a
//!   numbered target port must be a declared container port. The Endpoints carry
//!   `k8s.mesosphere.io/containerPort_<PROTO>_<hostIP>_<hostPort>` annotations naming the
//!   container port behind each host port.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pods;
use crate::selector::Selector;

/// Prefix of the Endpoints annotations of the HostIP:HostPort mode.
pub const CONTAINER_PORT_ANNOTATION: &str = "k8s.mesosphere.io/containerPort_";

/// How addresses are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Pod IP : container port.
    PodIp,
    /// Host IP : mapped host port.
    HostPort,
}

/// The subsets and annotations a Service's Endpoints should have; `None` when the Service has
/// no selector (its Endpoints are someone else's to write).
pub fn desired(
    svc: &Service,
    namespace_pods: &[&Pod],
    mode: Mode,
) -> Option<(Vec<EndpointSubset>, BTreeMap<String, String>)> {
    let spec = svc.spec.as_ref()?;
    let selector = Selector::from_map(spec.selector.as_ref()?);
    if selector.is_empty() {
        return None;
    }
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    // Ports (sorted) → (ready addresses, not-ready addresses).
    let mut groups: BTreeMap<Vec<PortKey>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    let mut annotations = BTreeMap::new();
    for pod in namespace_pods {
        if !selector.matches(pod.metadata.labels.as_ref())
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let status = pod.status.as_ref();
        let ip = match mode {
            Mode::PodIp => status.and_then(|s| s.pod_ip.clone()),
            Mode::HostPort => status.and_then(|s| s.host_ip.clone()),
        };
        let Some(ip) = ip.filter(|ip| !ip.is_empty()) else { continue };
        let ready = pods::is_ready(pod);
        if mode == Mode::HostPort && !ready {
            continue;
        }
        if !pods::is_active(pod) {
            continue;
        }
        let mut ports = Vec::new();
        for sp in spec.ports.iter().flatten() {
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
            let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
            let resolved = match mode {
                Mode::PodIp => container_port(pod, &target, &protocol),
                Mode::HostPort => host_port(pod, &target, &protocol).map(|(host, container)| {
                    annotations.insert(
                        format!("{CONTAINER_PORT_ANNOTATION}{protocol}_{ip}_{host}"),
                        container.to_string(),
                    );
                    host
                }),
            };
            if let Some(port) = resolved {
                ports.push(PortKey { name: sp.name.clone(), port, protocol });
            }
        }
        if ports.is_empty() {
            continue;
        }
        ports.sort();
        let address = EndpointAddress {
            ip,
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
            hostname: None,
        };
        let entry = groups.entry(ports).or_default();
        if ready || publish_not_ready {
            entry.0.push(address);
        } else {
            entry.1.push(address);
        }
    }
    let subsets = groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| {
                (&a.ip, &a.target_ref.as_ref().and_then(|r| r.name.clone()))
                    .cmp(&(&b.ip, &b.target_ref.as_ref().and_then(|r| r.name.clone())))
            });
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .into_iter()
                        .map(|p| EndpointPort {
                            name: p.name,
                            port: p.port,
                            protocol: Some(p.protocol),
                            app_protocol: None,
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    Some((subsets, annotations))
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    name: Option<String>,
    port: i32,
    protocol: String,
}

fn declared_ports(pod: &Pod) -> impl Iterator<Item = &k8s_openapi::api::core::v1::ContainerPort> {
    pod.spec.iter().flat_map(|s| s.containers.iter()).flat_map(|c| c.ports.iter().flatten())
}

/// The container port a target port names or numbers (stock rules: a number is taken as is).
fn container_port(pod: &Pod, target: &IntOrString, protocol: &str) -> Option<i32> {
    match target {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => declared_ports(pod)
            .find(|p| {
                p.name.as_deref() == Some(name)
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .map(|p| p.container_port),
    }
}

/// (host port, container port) for a target port under the HostIP:HostPort rules.
fn host_port(pod: &Pod, target: &IntOrString, protocol: &str) -> Option<(i32, i32)> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let lookup =
        |key: String| annotations.get(&key).and_then(|v| v.parse::<i32>().ok()).filter(|p| *p > 0);
    match target {
        IntOrString::String(name) => {
            let host = lookup(km_scheduler_core::task::port_name_annotation(protocol, name))?;
            let container = declared_ports(pod)
                .find(|p| {
                    p.name.as_deref() == Some(name)
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })?
                .container_port;
            Some((host, container))
        }
        IntOrString::Int(n) => {
            declared_ports(pod).find(|p| {
                p.container_port == *n && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })?;
            Some((lookup(km_scheduler_core::task::port_annotation(protocol, *n))?, *n))
        }
    }
}

/// Whether `existing` already says what `desired` does (so no write is needed).
pub fn up_to_date(
    existing: &Endpoints,
    subsets: &[EndpointSubset],
    annotations: &BTreeMap<String, String>,
) -> bool {
    let current = existing.subsets.clone().unwrap_or_default();
    let ours: BTreeMap<String, String> = existing
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(CONTAINER_PORT_ANNOTATION))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    current == subsets && &ours == annotations
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn service(target: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "ns" },
            "spec": { "selector": { "app": "web" }, "ports": [{ "name": "http", "port": 80, "targetPort": target }] },
        }))
        .expect("service")
    }

    fn pod(name: &str, ready: bool, pod_ip: &str, host_ip: &str, annotations: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "ns", "uid": format!("u-{name}"), "labels": { "app": "web" },
                "annotations": annotations },
            "spec": { "nodeName": "n1", "containers": [{ "name": "c", "ports": [{ "name": "web", "containerPort": 8080 }] }] },
            "status": { "phase": "Running", "podIP": pod_ip, "hostIP": host_ip,
                "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] },
        }))
        .expect("pod")
    }

    #[test]
    fn stock_endpoints_list_pod_ips_ready_and_not() {
        let a = pod("a", true, "10.0.0.2", "192.168.1.1", json!({}));
        let b = pod("b", false, "10.0.0.3", "192.168.1.1", json!({}));
        let (subsets, annotations) =
            desired(&service(json!("web")), &[&a, &b], Mode::PodIp).expect("selector");
        assert!(annotations.is_empty());
        assert_eq!(subsets.len(), 1);
        let s = &subsets[0];
        assert_eq!(s.addresses.as_ref().map(|a| a[0].ip.as_str()), Some("10.0.0.2"));
        assert_eq!(s.not_ready_addresses.as_ref().map(|a| a[0].ip.as_str()), Some("10.0.0.3"));
        assert_eq!(s.ports.as_ref().map(|p| p[0].port), Some(8080));
        let (numbered, _) = desired(&service(json!(9000)), &[&a], Mode::PodIp).expect("selector");
        assert_eq!(numbered[0].ports.as_ref().map(|p| p[0].port), Some(9000));
    }

    #[test]
    fn host_port_endpoints_use_the_mapped_ports_of_ready_pods() {
        let mapped = json!({ "k8s.mesosphere.io/portName_TCP_web": "31005", "k8s.mesosphere.io/port_TCP_8080": "31005" });
        let a = pod("a", true, "", "192.168.1.1", mapped.clone());
        let unready = pod("b", false, "", "192.168.1.2", mapped);
        let unmapped = pod("c", true, "", "192.168.1.3", json!({}));
        for target in [json!("web"), json!(8080)] {
            let (subsets, annotations) =
                desired(&service(target.clone()), &[&a, &unready, &unmapped], Mode::HostPort)
                    .expect("selector");
            assert_eq!(subsets.len(), 1, "{target}");
            let addresses = subsets[0].addresses.clone().unwrap_or_default();
            assert_eq!(
                addresses.iter().map(|a| a.ip.as_str()).collect::<Vec<_>>(),
                ["192.168.1.1"]
            );
            assert!(subsets[0].not_ready_addresses.is_none(), "only Ready pods");
            assert_eq!(subsets[0].ports.as_ref().map(|p| p[0].port), Some(31005));
            assert_eq!(
                annotations
                    .get("k8s.mesosphere.io/containerPort_TCP_192.168.1.1_31005")
                    .map(String::as_str),
                Some("8080")
            );
        }
        // A numbered target port must be declared by the pod.
        let (subsets, _) = desired(&service(json!(9999)), &[&a], Mode::HostPort).expect("selector");
        assert!(subsets.is_empty());
    }

    #[test]
    fn services_without_a_selector_are_left_alone() {
        let mut svc = service(json!(80));
        svc.spec.as_mut().expect("spec").selector = None;
        assert!(desired(&svc, &[], Mode::PodIp).is_none());
    }
}
